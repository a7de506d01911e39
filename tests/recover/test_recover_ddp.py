"""torchrun: 2 gloo processes on the CPU end with the weights of 1 process on the same global
batch (the processes split each batch; DDP averages their gradients; BatchNorm is frozen in
eval mode, so no statistic depends on the split)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hwprune.errors import InputError
from hwprune.recover import RecoverConfig, finetune
from hwprune.recover.data import TensorItems
from hwprune.recover.distributed import World
from hwprune.recover.stream import ItemStream

from recover_models import ConvNet, pair

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import json, sys, torch
from hwprune.recover import RecoverConfig, finetune, is_main_process
from recover_models import ConvNet, pair
teacher, student, kept = pair(ConvNet)
config = RecoverConfig(**json.loads(sys.argv[3]))
model, record = finetune(student, teacher, sys.argv[1], example_inputs=(torch.zeros(1, 3, 8, 8),), config=config,
                         kept=kept, penalty=lambda m: 1e-4 * sum(p.abs().sum() for p in m.parameters()))
if is_main_process():
    torch.save(model.state_dict(), sys.argv[2] + ".pt")
    json.dump(record.to_json(), open(sys.argv[2] + ".json", "w"))
"""


def _images(folder: Path) -> Path:
    from PIL import Image
    gen = torch.Generator().manual_seed(0)
    for k in range(2):
        (folder / f"c{k}").mkdir(parents=True)
        for i in range(5):
            Image.fromarray((torch.rand(11, 13, 3, generator=gen) * 255).to(torch.uint8).numpy()).save(
                folder / f"c{k}" / f"{i}.png")
    return folder


# id, data, config: AdamW with labels, features and a penalty; SGD on augmented image crops, with the
# norms re-estimated first (10 items: batches of 4, 4 and 2 in any number of processes)
CASES = [
    ("tensors-adamw-labels-features", "tensors",
     {"steps": 6, "batch_size": 8, "lr": 3e-3, "optimizer": "adamw", "alpha": 0.5, "features": True}),
    ("images-sgd-crops-recalibrated", "images",
     {"steps": 6, "batch_size": 4, "lr": 1e-2, "optimizer": "sgd", "alpha": 0.5, "recalibrate": 10}),
]


@pytest.mark.parametrize("form, changes", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_two_gloo_processes_equal_one(tmp_path, form, changes):
    if form == "tensors":
        data = tmp_path / "data.pt"
        x = torch.randn(20, 3, 8, 8, generator=torch.Generator().manual_seed(1))
        torch.save((x, x.mean((2, 3)).argmax(1)), data)
    else:
        data = _images(tmp_path / "imgs")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(data), str(tmp_path / "two"), json.dumps(changes)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((tmp_path / "two.json").read_text())["world_size"] == 2

    teacher, student, kept = pair(ConvNet)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one, record = finetune(student, teacher, data, example_inputs=(torch.zeros(1, 3, 8, 8),),
                               config=RecoverConfig(**changes), kept=kept,
                               penalty=lambda m: 1e-4 * sum(p.abs().sum() for p in m.parameters()))
    finally:
        torch.set_num_threads(threads)
    two = torch.load(tmp_path / "two.pt")
    assert record.world_size == 1
    moved = max(float((a - b).abs().max()) for a, b in zip(one.state_dict().values(), student.state_dict().values()))
    assert moved > 1e-3  # the runs trained: equality is not of two untouched copies
    for k, a in one.state_dict().items():
        assert torch.allclose(a, two[k], rtol=1e-5, atol=1e-6), (k, float((a - two[k]).abs().max()))


def test_processes_share_each_global_batch():
    """The local batches of N processes, in rank order, are the one process's global batch."""
    items = TensorItems((torch.arange(10.0).reshape(10, 1),), None, "t.pt")
    whole = ItemStream(items, 4, 0, World()).local_batch(3).inputs[0]
    parts = [ItemStream(items, 4, 0, World(r, 2)).local_batch(3).inputs[0] for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)


def test_a_batch_that_does_not_split_is_refused():
    items = TensorItems((torch.zeros(6, 1),), None, "t.pt")
    with pytest.raises(InputError, match="t.pt: a global batch of 4 does not split into 3 equal shares"):
        ItemStream(items, 4, 0, World(0, 3))
