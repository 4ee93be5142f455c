"""A model's input contract, and the check of a file's columns against it.

A :class:`Contract` says which columns a model takes: their names (or, for a model
that takes a tensor, only how many), types, whether each is required and whether it
may be empty; whether other columns are refused (``closed``) and whether the columns
must come in its order (``ordered``: a model that reads them by position). It comes
from

* the model catalog: an image's ``inputs`` -- its ``columns`` (:mod:`.spec`), or
  ``mlflow``, an MLflow model's signature (:mod:`.mlflow`) -- checked before any
  model starts (the launch preflight) and again on the first mini-batch;
* the model itself once it is ready: the v2 protocol's model metadata
  (:meth:`workers.scoring.protocols.ModelProtocol.model_contract`), checked before
  the first mini-batch.

What a file offers is a :class:`FileSample` (:mod:`.sample`): its columns, those the
model is sent (``model_columns`` / ``drop_columns`` applied) and the values of its
first rows as the model would be sent them, or, for Parquet, its footer's types and
null counts. :func:`problems` lists every misfit (:mod:`.check`); :func:`require`
raises the :class:`~scorefleet.errors.ContractMismatch` whose message the ``.error``
and ``scorefleet check`` both carry. Nothing here imports a format or a protocol
(both may use it).
"""

from workers.scoring.contract.check import Problem, message, problems, require
from workers.scoring.contract.sample import FileSample, sample_of, sample_of_schema
from workers.scoring.contract.spec import (
    CATALOG_KEYS,
    TYPES,
    Column,
    Contract,
    catalog_problems,
    declared,
    type_named,
)

__all__ = [
    "CATALOG_KEYS",
    "TYPES",
    "Column",
    "Contract",
    "FileSample",
    "Problem",
    "catalog_problems",
    "declared",
    "message",
    "problems",
    "require",
    "sample_of",
    "sample_of_schema",
    "type_named",
]
