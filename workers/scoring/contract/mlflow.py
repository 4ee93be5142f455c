"""An MLflow model's signature as a :class:`~.spec.Contract` (the catalog's
``inputs: {"mlflow": ...}``).

An MLflow model folder holds an ``MLmodel`` file (YAML) whose ``signature.inputs``
is a JSON list: column specs ``{"name": ..., "type": "double", "required": true}``
(older MLflow: ``"optional": true``), or tensor specs ``{"type": "tensor",
"tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}``. MLflow itself matches
columns by name and ignores others (so the contract is open and unordered unless the
catalog says ``closed`` / ``ordered``); a tensor is matched by position. A column of
integers or booleans takes no empty value (MLflow refuses a missing value there); the
others may be empty (a missing number is NaN).

The file is read with PyYAML, which the kubernetes client already brings: MLflow
itself (hundreds of MB with its dependencies) is not needed to read one small
documented file. Where it is: a path (the file, or the model's folder; relative to
the entry's ``cwd``, else the worker's directory), or an ``s3://`` URI read with the
worker's S3 client (its role needs ``s3:GetObject`` there). What was read is kept
per process (a local file until it changes; an S3 object for five minutes).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scorefleet.errors import ModelError
from scorefleet.s3uri import S3Uri
from workers.scoring.contract.spec import Column, Contract, type_named

#: MLflow's column types that take no empty value.
_NOT_NULLABLE = ("integer", "boolean")
#: numpy dtypes of a tensor spec, by what they hold
_DTYPES = {"float": "number", "int": "integer", "uint": "integer", "bool": "boolean"}
S3_CACHE_SECONDS = 300.0

_cache: dict[str, tuple[object, Contract]] = {}
_lock = threading.Lock()


def _column_type(spec: Mapping[str, Any]) -> str:
    raw = spec.get("type")
    if isinstance(raw, str) and raw not in ("array", "object", "map"):
        try:
            return type_named(raw, "type")
        except ValueError:
            return "any"
    return "any"  # nested values (array, object, map): what the model makes of them


def _tensor(spec: Mapping[str, Any]) -> tuple[int, str]:
    tensor = spec.get("tensor-spec") or {}
    dtype = str(tensor.get("dtype", "")).lower()
    kind = next((k for prefix, k in _DTYPES.items() if dtype.startswith(prefix)), "any")
    if dtype in ("str", "object", "bytes") or dtype.startswith("<u"):
        kind = "string"
    shape = tensor.get("shape") or []
    width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0 else 1
    return width, kind


def signature(text: str, where: str, image: str) -> Contract:
    """The contract of an ``MLmodel`` file's text; ValueError when it has none."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"it is not YAML: {exc}") from None
    sig = data.get("signature") if isinstance(data, dict) else None
    raw = sig.get("inputs") if isinstance(sig, dict) else None
    if not raw:
        raise ValueError("it has no signature inputs (log the model with a signature)")
    try:
        specs = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise ValueError(f"its signature inputs are not JSON: {exc}") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ValueError("its signature inputs are not a list of column or tensor specs")
    columns: list[Column] = []
    positional = False
    for spec in specs:
        if spec.get("type") == "tensor":
            width, kind = _tensor(spec)
            columns += [Column("", kind, nullable=kind in ("number", "any"))] * width
            positional = True
            continue
        kind = _column_type(spec)
        required = bool(spec.get("required", not spec.get("optional", False)))
        name = str(spec.get("name") or "")
        positional = positional or not name
        columns.append(Column(name, kind, required, nullable=kind not in _NOT_NULLABLE))
    return Contract(
        columns=tuple(columns),
        positional=positional,
        source=f"the MLflow signature in {where} (the catalog's inputs.mlflow for {image})",
        remedy=(
            f"log the model again with a signature that says so, or change inputs in the "
            f"model catalog's entry for {image}"
        ),
    )


def _read(ref: str, cwd: str | None, s3: Any) -> tuple[str, str, object]:
    """(the MLmodel file's text, where it is, what says it changed)."""
    if ref.startswith("s3://"):
        uri = S3Uri.parse(ref)
        if not uri.key.endswith("MLmodel"):
            uri = S3Uri(uri.bucket, uri.key.rstrip("/") + "/MLmodel")
        if s3 is None:
            raise ValueError("no S3 client to read it with")
        body = s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
        try:
            return body.read().decode("utf-8"), str(uri), time.monotonic()
        finally:
            body.close()
    path = _local(ref, cwd)
    stat = path.stat()
    return path.read_text(encoding="utf-8"), str(path), (stat.st_mtime_ns, stat.st_size)


def _local(ref: str, cwd: str | None) -> Path:
    """The MLmodel file a local ``ref`` names (the file, or its model's folder)."""
    path = Path(ref).expanduser()
    if not path.is_absolute() and cwd:
        path = Path(cwd) / path
    return path / "MLmodel" if path.is_dir() else path


def load(ref: str, *, image: str, cwd: str | None = None, s3: Any = None) -> Contract:
    """The contract of the MLmodel file at ``ref``, read once per process (again when
    the local file changes, or every few minutes from S3). :class:`ModelError` when
    it cannot be read or holds no signature: the catalog points to the wrong place."""
    key = f"{cwd or ''}\n{ref}"
    with _lock:
        cached = _cache.get(key)
    if cached is not None and ref.startswith("s3://"):
        stamp, contract = cached
        if isinstance(stamp, float) and time.monotonic() - stamp < S3_CACHE_SECONDS:
            return contract
    try:
        if cached is not None and not ref.startswith("s3://"):
            stat = _local(ref, cwd).stat()
            if cached[0] == (stat.st_mtime_ns, stat.st_size):
                return cached[1]
        text, where, stamp = _read(ref, cwd, s3)
        contract = signature(text, where, image)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"the model catalog's inputs.mlflow for {image} is {ref!r}, which cannot be "
            f"read as an MLflow model's MLmodel file: {exc}"
        ) from None
    except Exception as exc:
        from botocore.exceptions import ClientError

        from scorefleet.storage.s3io import error_code

        if isinstance(exc, ClientError) and error_code(exc) in {"NoSuchKey", "404", "403"}:
            raise ModelError(
                f"the model catalog's inputs.mlflow for {image} is {ref!r}, which cannot "
                f"be read: {error_code(exc)}"
            ) from None
        raise  # S3 unavailable: transient, retried
    with _lock:
        _cache[key] = (stamp, contract)
    return contract
