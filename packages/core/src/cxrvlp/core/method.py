"""The method contract: what a method package gives core and the benchmark, as one checked object.

A method package advertises its registry module in the `cxrvlp.methods` entry-point group; that module
defines `METHOD_SPEC = MethodSpec(...)`. `get_method(name)` imports it, checks the spec (a missing or
mistyped part is a `MethodContractError` naming the method and the part) and returns the spec. The
benchmark, the real-image check and the demo read everything per method through it (adapters, prompts,
which config keys carry the image size and text length, the packaged recipes): no per-method table lives
outside the method's own package.

    METHOD_SPEC = MethodSpec(
        name="mgca",
        train=train,                           # (config, overrides) -> run folder (its final/ is loadable)
        load_adapter=load_adapter,             # (pretrained_dir, device=None) -> ZeroShotAdapter
        load_official_adapter=load_official_adapter,        # (source, name=None, device=None)
        load_official_checkpoint=load_official_checkpoint,  # (source, name=None, strict=True) -> nn.Module
        configs_dir=Path(__file__).parent / "configs",      # one YAML per recipe
        prompts={"*": PromptChoice("cxrclip-binary", official=False)},
        image_size_keys=("data.image_size",),
        text_length_key="model.max_words",
        pretrained=(PretrainedRecord(...),),
    )
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrvlp.core.errors import ConfigError


class MethodContractError(TypeError):
    """A method package's METHOD_SPEC is missing or breaks the contract (message names method and part)."""


@dataclass(frozen=True)
class PromptChoice:
    """Which prompt set (by name, `cxrvlp.bench.prompts.PROMPT_SETS`) a method uses, and whose it is."""

    prompt_set: str
    official: bool  # False: the method defines no such prompts, the choice is ours (labelled in results)


@dataclass(frozen=True)
class PretrainedRecord:
    """A released checkpoint a method can import (timm's pretrained cfg): read by the importer and adapter.

    Every field that moves a number is here once, instead of being restated in the importer, the adapter
    and the README.
    """

    name: str  # registered model name it instantiates, e.g. "mgca-vit-b16"
    file_name: str  # the file as released, e.g. "vit_base.ckpt"
    source: str  # where the authors publish it (a URL or "Google Drive link in the official README")
    image_size: int
    normalisation: str  # key of core.data.transforms normalisation presets
    tokenizer: str  # HF id or packaged name the release was trained with
    text_max_length: int
    sha256: str | None = None  # None: not known to us (the file is not redistributable)
    notes: str = ""


@dataclass(frozen=True)
class DemoBudget:
    """What `cxrvlp-bench demo` trains of the method's `tiny` recipe on the synthetic mirrors: a budget
    (steps, threads) and the optimiser keys a run cut to that budget needs (learning rate, a schedule that
    ends within the budget), never a model or loss key. Each package measures and owns its own (no
    per-method table in the benchmark)."""

    max_steps: int
    # CPU seconds per optimizer step at 64 px, batch 16, one thread (measured on an idle 2-core AVX-512
    # machine during a full demo); the demo starts the longest job first with it
    cpu_s_per_step: float
    overrides: tuple[str, ...] = ()  # further budget keys, e.g. "num_threads=1", "schedule.name=cosine"
    measured: str = ""  # what this budget reached in the demo (zero-shot macro AUROC), for the reader

    def train_overrides(self) -> list[str]:
        """`max_steps=N` plus the further budget keys."""
        return [f"max_steps={self.max_steps}", *self.overrides]

    def expected_cpu_s(self) -> float:
        """Expected training CPU seconds (steps x seconds per step)."""
        return self.max_steps * self.cpu_s_per_step


@dataclass(frozen=True)
class MethodSpec:
    """Everything core and the benchmark may know about one method package."""

    name: str
    train: Callable[..., Path]
    load_adapter: Callable[..., Any]
    load_official_checkpoint: Callable[..., Any]
    configs_dir: Path
    prompts: Mapping[str, PromptChoice]  # dataset name -> choice; "*" is the default
    image_size_keys: tuple[str, ...]  # config keys `train` overrides to change the input size
    text_length_key: str | None  # config key of the text length in tokens (None: the method has none)
    load_official_adapter: Callable[..., Any] | None = None
    pretrained: tuple[PretrainedRecord, ...] = ()
    random_init_overrides: tuple[str, ...] = ("model.image_pretrained=null", "model.text_pretrained=null")
    # (model_name, batch_size[, text_length=]) -> (task module, synthetic batch): a step of any model
    # through the method's own task module (the registry-wide contract test and `cxrvlp-bench perf` use it)
    example_batch: Callable[..., tuple[Any, dict[str, Any]]] | None = None
    # {dataset name: root} of the label-only datasets at hand -> the overrides that add to pretraining the
    # ones the method's recipe pretrains on besides MIMIC-CXR (CXR-CLIP: CheXpert as prompt reports); None:
    # the method pretrains on image-report pairs only
    label_data_overrides: Callable[[Mapping[str, Path]], list[str]] | None = None
    # the synthetic demo's budget on the `tiny` recipe (None: the demo's default steps)
    demo: DemoBudget | None = None
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def recipe(self, name: str) -> Path:
        """Path of the packaged recipe `name` ('tiny', 'small', ...); ConfigError lists them."""
        path = Path(self.configs_dir) / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"{self.name}: no packaged recipe '{name}'; available: {self.recipes()}")
        return path

    def recipes(self) -> list[str]:
        """Names of the packaged recipes."""
        return sorted(p.stem for p in Path(self.configs_dir).glob("*.yaml"))

    def prompt_choice(self, dataset: str) -> PromptChoice:
        """The prompt set this method uses on `dataset` (its default when the dataset has no entry)."""
        return self.prompts.get(dataset, self.prompts["*"])

    def pretrained_record(self, name: str) -> PretrainedRecord:
        """The record of a released checkpoint by model name or file name."""
        for rec in self.pretrained:
            if name in (rec.name, rec.file_name):
                return rec
        raise KeyError(
            f"{self.name}: no pretrained record '{name}'; known: {[r.name for r in self.pretrained]}"
        )


def lazy(target: str) -> Callable[..., Any]:
    """A callable standing for "module:function" that imports the module on first call.

    A registry module stays cheap to import (the benchmark lists every method) while its MethodSpec points
    at the heavy modules: `load_official_checkpoint=lazy("cxrvlp.mgca.official:load_official_checkpoint")`.
    """
    import importlib

    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"lazy() needs 'module:function', got {target!r}")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__name__, call.__qualname__ = name, target
    call.__doc__ = f"`{target}` (imported on first call)."
    return call


def cli_arguments(argv: Sequence[str], doc: str | None) -> tuple[str | None, list[str]]:
    """`CONFIG key=value ...` of a training entry point -> (config or None, overrides); -h prints `doc`."""
    argv = list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(doc or "")
        raise SystemExit(0)
    config = argv[0] if argv and "=" not in argv[0] else None
    return config, [a for a in argv if "=" in a]


def resolve_recipe(spec: MethodSpec, config: str | os.PathLike) -> Path:
    """A YAML path as given, or the packaged recipe of that name ('tiny', 'mgca_vit_b16', 'tiny.yaml')."""
    p = Path(config)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if p.is_file():
            return p
        if p.parent == Path(".") and p.stem in spec.recipes():  # 'tiny.yaml': the packaged file by name
            return spec.recipe(p.stem)
        raise ConfigError(f"{spec.name}: config file '{p}' does not exist; packaged: {spec.recipes()}")
    return spec.recipe(str(config))


def load_recipe_config(
    method: str, config_cls: type, config: Any = None, overrides: Sequence[str] = ()
) -> Any:
    """The training config of a run of `method`.

    `config` is a `config_cls` instance (used as given: overrides are refused), a YAML path or the name of a
    packaged recipe, or None (the dataclass defaults); `overrides` are `key=value` strings.
    """
    from cxrvlp.core.registry import get_method
    from cxrvlp.core.training.config import load_config

    if isinstance(config, config_cls):
        if overrides:
            raise ConfigError(f"overrides apply to a YAML config; edit the {config_cls.__name__} instead")
        return config
    path = None if config is None else resolve_recipe(get_method(method), config)
    return load_config(config_cls, path, list(overrides))


def recipe_trainer(method: str, config_cls: type, make_task: Callable[[Any], Any]) -> Callable[..., Path]:
    """A method's `train(config=None, overrides=())`: load the config (`load_recipe_config`), build the
    method's training task with `make_task(cfg)`, run core's loop; returns the run folder (its `final/` is
    what the method's `load_adapter` reads)."""

    def train(config: Any = None, overrides: Sequence[str] = ()) -> Path:
        import torch
        from cxrvlp.core.training.loop import run_training

        cfg = load_recipe_config(method, config_cls, config, overrides)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        return Path(run_training(make_task(cfg), cfg).output_dir)

    train.__doc__ = f"Run one {method} training (recipe name, YAML path or config); returns the run folder."
    train.__qualname__ = train.__name__ = "train"
    return train


def training_main(
    train: Callable[[Any, Sequence[str]], Path], doc: str | None, argv: Sequence[str] | None = None
) -> Path:
    """`python -m cxrvlp.<m>.train CONFIG key=value ...`: runs `train`, prints and returns the run folder."""
    import sys

    config, overrides = cli_arguments(sys.argv[1:] if argv is None else argv, doc)
    out = train(config, overrides)
    print(f"run folder: {out}")
    return out


def file_sha256(source: Any) -> str | None:
    """SHA-256 of `source` when it is a path to a file (a released checkpoint), else None (dict, folder)."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_file():
        from cxrvlp.core.training.checkpoint import sha256_file

        return sha256_file(source)
    return None


def merged_config(base: Mapping[str, Any], overrides: Mapping[str, Any], nested: Sequence[str] = ()) -> dict:
    """`base` updated with `overrides`; the keys in `nested` whose override is a mapping are merged into the
    base's mapping instead of replacing it (`bert={"vocab_size": 600}` keeps the other BERT fields)."""
    d = dict(base)
    for k, v in overrides.items():
        d[k] = {**(d.get(k) or {}), **v} if k in nested and isinstance(v, Mapping) else v
    return d


def with_text_vocab(
    cfg: dict[str, Any], default_text_config: Mapping[str, Any], key: str = "text_config"
) -> dict:
    """`cfg` with its `text_vocab_size` entry (if any) moved into `cfg[key]["vocab_size"]` (registry builders
    accept `text_vocab_size=N` to size the embedding to a run's own tokenizer)."""
    cfg = dict(cfg)
    vocab = cfg.pop("text_vocab_size", None)
    if vocab is not None:
        cfg[key] = {**cfg.get(key, default_text_config), "vocab_size": int(vocab)}
    return cfg


def saved_or(folder: str | os.PathLike, name: str, fallback: Any) -> Any:
    """`folder/name` when it is a folder (a tokenizer saved beside the weights), else `fallback`."""
    p = Path(folder) / name
    return p if p.is_dir() else fallback


def method_spec(name: str, **parts: Any) -> MethodSpec:
    """A MethodSpec of a package that follows the template (docs/design.md), its hooks found by module:

    train = `cxrvlp.<name>.train:train`, load_adapter / load_official_adapter = `cxrvlp.<name>.zeroshot`,
    load_official_checkpoint = `cxrvlp.<name>.official`, example_batch = `cxrvlp.<name>.testing`, recipes in
    the package's `configs/`, image size at `data.image_size` + `model.image_size`, text length at
    `model.text_max_length`. `parts` overrides any of them and gives the rest (prompts, pretrained, ...).
    """
    import importlib

    package = f"cxrvlp.{name}"
    defaults: dict[str, Any] = dict(
        train=lazy(f"{package}.train:train"),
        load_adapter=lazy(f"{package}.zeroshot:load_adapter"),
        load_official_adapter=lazy(f"{package}.zeroshot:load_official_adapter"),
        load_official_checkpoint=lazy(f"{package}.official:load_official_checkpoint"),
        example_batch=lazy(f"{package}.testing:example_batch"),
        configs_dir=Path(importlib.import_module(package).__file__).parent / "configs",
        image_size_keys=("data.image_size", "model.image_size"),
        text_length_key="model.text_max_length",
    )
    return MethodSpec(name=name, **{**defaults, **parts})


_CALLABLES = ("train", "load_adapter", "load_official_checkpoint")


def check_method_spec(spec: Any, method: str) -> MethodSpec:
    """`spec` if it fulfils the contract for `method`, else MethodContractError naming every broken part."""
    if not isinstance(spec, MethodSpec):
        raise MethodContractError(
            f"method '{method}': its registry module must define METHOD_SPEC = cxrvlp.core.method.MethodSpec"
            f"(...), found {type(spec).__name__}"
        )
    problems: list[str] = []
    if spec.name != method:
        problems.append(f"name is '{spec.name}' but the entry point is '{method}'")
    for part in _CALLABLES:
        if not callable(getattr(spec, part)):
            problems.append(f"{part} is not callable")
    if spec.load_official_adapter is not None and not callable(spec.load_official_adapter):
        problems.append("load_official_adapter is not callable")
    if not Path(spec.configs_dir).is_dir():
        problems.append(f"configs_dir '{spec.configs_dir}' is not a folder")
    elif not spec.recipes():
        problems.append(f"configs_dir '{spec.configs_dir}' has no *.yaml recipe")
    if "*" not in spec.prompts:
        problems.append("prompts has no default entry '*'")
    for ds, choice in spec.prompts.items():
        if not isinstance(choice, PromptChoice):
            problems.append(f"prompts['{ds}'] is {type(choice).__name__}, not PromptChoice")
    if not spec.image_size_keys or not all(isinstance(k, str) and k for k in spec.image_size_keys):
        problems.append("image_size_keys must name at least one config key")
    for rec in spec.pretrained:
        if not isinstance(rec, PretrainedRecord):
            problems.append(f"pretrained holds {type(rec).__name__}, not PretrainedRecord")
    if problems:
        raise MethodContractError(f"method '{method}' breaks the contract: " + "; ".join(problems))
    return spec


def describe(spec: MethodSpec) -> dict[str, Any]:
    """A JSON-able summary of a spec (for `cxrvlp methods` and result files)."""
    return {
        "name": spec.name,
        "description": spec.description,
        "recipes": spec.recipes(),
        "prompts": {k: {"set": v.prompt_set, "official": v.official} for k, v in spec.prompts.items()},
        "image_size_keys": list(spec.image_size_keys),
        "text_length_key": spec.text_length_key,
        "official_import": spec.load_official_adapter is not None,
        "pretrained": [r.name for r in spec.pretrained],
    }


def overrides_for_size(spec: MethodSpec, image_size: int | None, text_length: int | None) -> list[str]:
    """key=value overrides that set the image size and text length of any recipe of `spec`."""
    ov: list[str] = []
    if image_size is not None:
        ov += [f"{k}={image_size}" for k in spec.image_size_keys]
    if text_length is not None and spec.text_length_key:
        ov.append(f"{spec.text_length_key}={text_length}")
    return ov


__all__: Sequence[str] = (
    "MethodContractError",
    "cli_arguments",
    "MethodSpec",
    "PretrainedRecord",
    "PromptChoice",
    "check_method_spec",
    "describe",
    "file_sha256",
    "lazy",
    "load_recipe_config",
    "merged_config",
    "method_spec",
    "overrides_for_size",
    "resolve_recipe",
    "saved_or",
    "recipe_trainer",
    "training_main",
    "with_text_vocab",
)
