// hwprune_native::bsr_linear: y = x @ W^T + bias with W block-sparse (BSR), fp32, on the CPU.
//
// W (N x K) is stored as block rows over N: the blocks of row-block rb are
// values[crow[rb] .. crow[rb+1]), each at column-block col[j], and each block is stored
// TRANSPOSED (B_k x B_n, k-major), so that x_tile (R x B) @ block (B x B) adds to the output
// tile: y[r, rb*B + i] += sum_k x[r, col[j]*B + k] * block[k][i].
//
// The micro-kernel keeps an R x B accumulator tile in registers for the whole reduction over
// a block row (the outer-product GEMM scheme: broadcast one x, FMA with a row of the block).
// With AVX-512 it is written with intrinsics; elsewhere as plain loops with compile-time trip
// counts that gcc unrolls and vectorizes (-O3 -march=native -fopenmp-simd). R * B is sized to
// the vector register file: 256 floats (16 zmm) with AVX-512, 96 floats (12 ymm) otherwise. Threads: at::parallel_for, which is
// OpenMP in the torch wheel and follows torch.set_num_threads.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

namespace {

#if defined(__AVX512F__)
constexpr int kAccFloats = 256;
#else
constexpr int kAccFloats = 96;
#endif

#if defined(__AVX512F__)
#include <immintrin.h>
// AVX-512: the accumulator tile is R x (B / 16) zmm registers, written with intrinsics so that
// it stays in registers (gcc's auto-vectorizer picks 256-bit vectors and spills this tile).
template <int B, int R>
inline void tile(const float* __restrict x, int64_t ldx, const int64_t* __restrict cols,
                 const float* __restrict blocks, int64_t nblocks, const float* __restrict bias,
                 float* __restrict y, int64_t ldy) {
  constexpr int V = B / 16;
  __m512 acc[R][V];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = bias ? _mm512_loadu_ps(bias + 16 * v) : _mm512_setzero_ps();
  for (int64_t j = 0; j < nblocks; ++j) {
    const float* __restrict xb = x + cols[j] * B;
    const float* __restrict w = blocks + j * B * B;
#pragma GCC unroll 2
    for (int k = 0; k < B; ++k) {
      __m512 wk[V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) wk[v] = _mm512_loadu_ps(w + k * B + 16 * v);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512 xv = _mm512_set1_ps(xb[r * ldx + k]);
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(xv, wk[v], acc[r][v]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(y + r * ldy + 16 * v, acc[r][v]);
}
#else
// Portable: the same scheme in plain loops with compile-time trip counts, which gcc unrolls
// and vectorizes for the machine's vector width (AVX2, NEON, ...).
template <int B, int R>
inline void tile(const float* __restrict x, int64_t ldx, const int64_t* __restrict cols,
                 const float* __restrict blocks, int64_t nblocks, const float* __restrict bias,
                 float* __restrict y, int64_t ldy) {
  float acc[R][B];
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r) {
#pragma omp simd
    for (int i = 0; i < B; ++i) acc[r][i] = bias ? bias[i] : 0.0f;
  }
  for (int64_t j = 0; j < nblocks; ++j) {
    const float* __restrict xb = x + cols[j] * B;
    const float* __restrict w = blocks + j * B * B;
    for (int k = 0; k < B; ++k) {
      const float* __restrict wk = w + k * B;
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) {
        const float xv = xb[r * ldx + k];
#pragma omp simd
        for (int i = 0; i < B; ++i) acc[r][i] += xv * wk[i];
      }
    }
  }
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r) {
#pragma omp simd
    for (int i = 0; i < B; ++i) y[r * ldy + i] = acc[r][i];
  }
}
#endif

// Rows [m0, m1) of the output for block row rb: full R-row tiles, then single rows.
template <int B>
void block_row(const float* x, int64_t K, const int64_t* crow, const int64_t* col, const float* values,
               const float* bias, float* y, int64_t N, int64_t rb, int64_t m0, int64_t m1) {
  constexpr int R = std::max(1, kAccFloats / B);
  const int64_t first = crow[rb], nblocks = crow[rb + 1] - first;
  const int64_t* cols = col + first;
  const float* blocks = values + first * B * B;
  const float* b = bias ? bias + rb * B : nullptr;
  int64_t m = m0;
  for (; m + R <= m1; m += R)
    tile<B, R>(x + m * K, K, cols, blocks, nblocks, b, y + m * N + rb * B, N);
  for (; m < m1; ++m)
    tile<B, 1>(x + m * K, K, cols, blocks, nblocks, b, y + m * N + rb * B, N);
}

template <int B>
void run(const float* x, int64_t M, int64_t K, const int64_t* crow, const int64_t* col, const float* values,
         const float* bias, float* y, int64_t N) {
  // Tasks are (row chunk, block row) pairs: a chunk of rows small enough that its x panel
  // stays in cache while the block row's weights are reused across its tiles.
  constexpr int64_t kChunk = 64;
  const int64_t rows = N / B, chunks = (M + kChunk - 1) / kChunk;
  at::parallel_for(0, rows * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c = t / rows, rb = t % rows;
      block_row<B>(x, K, crow, col, values, bias, y, N, rb, c * kChunk, std::min(M, (c + 1) * kChunk));
    }
  });
}

at::Tensor bsr_linear(const at::Tensor& x, const at::Tensor& crow, const at::Tensor& col, const at::Tensor& values,
                      const std::optional<at::Tensor>& bias, int64_t out_features) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat, "hwprune_native::bsr_linear: fp32 CPU x only");
  TORCH_CHECK(values.dim() == 3 && values.size(1) == values.size(2), "values must be (nnz, B, B)");
  TORCH_CHECK(values.scalar_type() == at::kFloat, "values must be fp32");
  const int64_t B = values.size(1), K = x.size(-1), N = out_features;
  TORCH_CHECK(K % B == 0 && N % B == 0, "in and out features must be multiples of the block size");
  TORCH_CHECK(crow.numel() == N / B + 1, "crow_indices must have out_features / B + 1 entries");
  auto xc = x.contiguous().view({-1, K});
  auto crow64 = crow.to(at::kLong).contiguous(), col64 = col.to(at::kLong).contiguous();
  auto vals = values.contiguous();
  std::optional<at::Tensor> bc;
  if (bias.has_value() && bias->defined()) bc = bias->to(at::kFloat).contiguous();
  const int64_t M = xc.size(0);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  auto y = at::empty({M, N}, x.options());
  const float* bp = bc ? bc->data_ptr<float>() : nullptr;
  const auto args = std::make_tuple(xc.data_ptr<float>(), M, K, crow64.data_ptr<int64_t>(),
                                    col64.data_ptr<int64_t>(), vals.data_ptr<float>(), bp, y.data_ptr<float>(), N);
  switch (B) {
    case 16: std::apply(run<16>, args); break;
    case 32: std::apply(run<32>, args); break;
    case 64: std::apply(run<64>, args); break;
    default: TORCH_CHECK(false, "block size must be 16, 32 or 64, got ", B);
  }
  return y.view(sizes);
}

}  // namespace

TORCH_LIBRARY(hwprune_native, m) {
  m.def("bsr_linear(Tensor x, Tensor crow_indices, Tensor col_indices, Tensor values, Tensor? bias, "
        "int out_features) -> Tensor");
  m.impl("bsr_linear", c10::DispatchKey::CPU, TORCH_FN(bsr_linear));
}
