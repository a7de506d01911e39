"""Recovery: distillation from the original model, fine-tuning, and iterative pruning.

    finetune(student, teacher, data, config=RecoverConfig(...)) -> (model, RecoverRecord)
    load_data(spec, example_inputs, tokenizer=None) -> recovery data (hwprune.recover.data)
    iterative_slim(model, example_inputs, data, rounds=K, recover=RecoverConfig(...), **slim_kwargs)
        -> (model, report)
"""
from .config import RecoverConfig
from .data import IMAGENET_MEAN, IMAGENET_STD, ItemData, LoaderData, load_data
from .distributed import is_main_process
from .iterative import compose_kept, iterative_slim
from .train import RecoverRecord, finetune

__all__ = ["RecoverConfig", "RecoverRecord", "finetune", "load_data", "ItemData", "LoaderData",
           "iterative_slim", "compose_kept", "IMAGENET_MEAN", "IMAGENET_STD", "is_main_process"]
