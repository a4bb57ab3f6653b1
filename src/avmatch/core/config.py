"""Typed, validated view of params.yaml.

Every tunable lives in params.yaml: `common`, `orchestration` and one section per system. This module
is the only reader. A system's section is declared by that system (`avmatch.<system>.params.SECTION`),
so the core names no system and a stage of one system loads, validates and depends on its own section
only. Unknown keys and bad values stop the run with a message naming the key path, the value and what
is allowed, before any work starts.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)


class ConfigError(ValueError):
    """params.yaml is missing, unparsable or invalid; the message says which key and why."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# every trainer's `train.max_minutes` (avmatch.core.training says why it is only a safety stop)
MAX_MINUTES_HELP = ("optional safety stop (null = no limit): reaching it before max_steps saves the checkpoint "
                    "and fails the train stage; a rerun resumes from the checkpoint")
TRAIN_THREADS_HELP = ("torch threads while training. A fixed count makes the trained weights the same on any machine "
                      "(the thread count orders the float sums); 0 = common.num_threads (machine-dependent)")


# ---------------------------------------------------------------- common
class MlflowParams(StrictModel):
    tracking_uri: str | None = Field(None, description="None: sqlite:///<project root>/mlflow.db")
    artifact_root: str | None = Field(None, description="None: <project root>/mlruns")
    experiment_prefix: str = "avmatch"
    enabled: bool = True


class CommonParams(StrictModel):
    seed: int = 1234
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(0, ge=0, description="torch threads; 0 = all cores")
    mlflow: MlflowParams = MlflowParams()


# ---------------------------------------------------------------- orchestration
class RetryParams(StrictModel):
    attempts: int = Field(2, ge=0, le=10, description="extra attempts for transient (I/O) failures")
    backoff_s: float = Field(10.0, ge=0, description="first retry delay; doubles each attempt")


class ReevaluateParams(StrictModel):
    cron: str = Field("0 4 * * 1", description="when the scheduled re-evaluation runs (cron, timezone below)")
    timezone: str = "UTC"
    interval_s: float | None = Field(None, gt=0, description="instead of cron: every N seconds (testing)")
    tolerance: float = Field(0.02, ge=0, description="largest allowed drop of a watched metric vs the last run")
    pipelines: list[str] | None = Field(None, description="None: every pipeline with a registered model")

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError("must be a 5-field cron expression like '0 4 * * 1'")
        return v


class DaskParams(StrictModel):
    address: str | None = Field(None, description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    n_workers: int = Field(2, ge=1, description="local cluster size when no address is given")
    threads_per_worker: int = Field(1, ge=1)


class ServerParams(StrictModel):
    host: str = "127.0.0.1"
    prefect_port: int = Field(4200, ge=1, le=65535)
    mlflow_port: int = Field(5000, ge=1, le=65535)


class OrchestrationParams(StrictModel):
    retries: RetryParams = RetryParams()
    reevaluate: ReevaluateParams = ReevaluateParams()
    dask: DaskParams = DaskParams()
    servers: ServerParams = ServerParams()


class Params(StrictModel):
    """The common sections; `load_params` returns a subclass that adds each loaded system's section
    (`params.fingerprint`, `params.versions`, ...)."""

    common: CommonParams = CommonParams()
    orchestration: OrchestrationParams = OrchestrationParams()


CORE_SECTIONS = ("common", "orchestration")


def read_yaml(text: str) -> Any:
    """yaml.safe_load with libyaml's C loader when present: every stage reads the 1,400-line dvc.yaml
    (and dvc.lock) at start, which the pure-Python loader takes ~0.2 s a time for."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def system_names() -> list[str]:
    """The systems params.yaml may have a section for: packages of `avmatch` with a `params` module."""
    import avmatch

    found = []
    for info in pkgutil.iter_modules(avmatch.__path__):
        if info.ispkg and info.name != "core":
            if any((Path(p) / info.name / "params.py").exists() for p in avmatch.__path__):
                found.append(info.name)
    return sorted(found)


def section_model(system: str) -> type[StrictModel]:
    """The pydantic model of one system's section (`avmatch.<system>.params.SECTION`)."""
    if system not in system_names():
        raise ConfigError(f"unknown section '{system}' in params.yaml; known sections: "
                          f"{', '.join([*CORE_SECTIONS, *system_names()])}")
    return importlib.import_module(f"avmatch.{system}.params").SECTION


@lru_cache(maxsize=None)
def params_model(systems: tuple[str, ...]) -> type[Params]:
    """`Params` with the sections of `systems` added (their defaults when params.yaml omits them)."""
    fields: dict[str, Any] = {s: (section_model(s), Field(default_factory=section_model(s))) for s in systems}
    return create_model("Params", __base__=Params, **fields)


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}' (check the spelling; allowed keys are listed in params.yaml)")
        else:
            value = e.get("input")
            lines.append(f"  - {key} = {value!r}: {e['msg']}")
    return "\n".join(lines)


def validate_params(data: dict[str, Any], source: str = "params", systems: list[str] | tuple[str, ...] | None = None
                    ) -> Params:
    """Validate raw params. `systems`: the sections to validate (None: every system); the sections of
    other systems are left unread, so a stage neither validates nor depends on another system's keys."""
    data = dict(data or {})
    known = system_names()
    unknown = sorted(k for k in data if k not in CORE_SECTIONS and k not in known)
    if unknown:
        raise ConfigError(f"invalid configuration in {source}:\n  - unknown section(s) {unknown}; known sections: "
                          f"{', '.join([*CORE_SECTIONS, *known])}")
    wanted = tuple(known if systems is None else systems)
    for s in wanted:
        if s not in known:
            raise ConfigError(f"unknown system '{s}'; known systems: {', '.join(known)}")
    data = {k: v for k, v in data.items() if k in CORE_SECTIONS or k in wanted}
    try:
        return params_model(wanted).model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None,
                systems: list[str] | tuple[str, ...] | None = None) -> Params:
    """Read and validate params.yaml (plus dotted `overrides`, as `dvc exp run -S` sets them);
    raise ConfigError with a readable message when it is wrong. `systems`: see `validate_params`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such parameter file (run from the project root or pass --params)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return validate_params(apply_overrides(data, overrides or {}), str(path), systems)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key.path=value` strings (as `dvc exp run -S` takes them) -> {key.path: value}, values parsed as
    YAML; ConfigError for an item without `=`."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.path=value (e.g. fingerprint.train.max_steps=100)")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (as `dvc exp run -S a.b=c` does) on a copy of raw params; validation comes after."""
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{dotted}': '{p}' is not a section")
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------- partial models (UI / API runs)
def partial_model(model: type[BaseModel], name: str | None = None) -> type[BaseModel]:
    """The same tree of keys as `model`, every field optional and unset by default.

    A Prefect deployment takes this as its parameter type, so the UI shows a form of the params.yaml
    section and an API run is validated against the real keys and types; only the fields a user
    fills in become overrides (exactly like `dvc exp run -S`).
    """
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for key, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            ann = partial_model(ann, f"{name or model.__name__}_{key}")
        fields[key] = (ann | None, Field(None, description=info.description))
    return create_model(name or f"{model.__name__}Overrides", __config__=ConfigDict(extra="forbid"), **fields)


def overrides_from_model(obj: BaseModel | dict | None, prefix: str) -> dict[str, Any]:
    """Dotted overrides (`prefix.a.b: value`) for the fields that were set in a partial model."""
    if obj is None:
        return {}
    data = obj.model_dump(mode="json", exclude_none=True) if isinstance(obj, BaseModel) else obj
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            out.update(overrides_from_model(value, f"{prefix}.{key}"))
        else:
            out[f"{prefix}.{key}"] = value
    return out
