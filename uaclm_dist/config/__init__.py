"""One typed schema for a whole run, loaded from YAML plus dotted ``key=value`` overrides.

    config = load_config("configs/demo.yaml", ["optim.lr=2e-4", "model.lora.rank=16"])

Everything a run decides lives in :class:`RunConfig` (pydantic v2, unknown keys forbidden at every
level). :func:`load_config` turns every problem into one :class:`ConfigError` whose message is for
people: it names the dotted key, the expected type, the bad value and where the value came from
(the config file or the command line), suggests the closest valid key or value for typos, and
lists all problems at once rather than the first.

Checks run in three layers:

1. per field (types, choices, ranges) - pydantic field constraints; the names of objectives,
   scores, data formats and model families are checked against their registries;
2. across fields (e.g. an objective that needs the full vocabulary needs
   ``objective.implementation: reference``) - :func:`~.schema.cross_field_issues`, which also
   guards configs built directly in code;
3. against the file system (the DeepSpeed config, data files, local model paths must exist) -
   done by :func:`load_config`, which also rewrites those paths to absolute ones so the resolved
   config (``RunConfig.to_yaml()``) is what the run actually used.

Modules: :mod:`.schema` (the sections, :class:`RunConfig`, cross-field rules), :mod:`.choices`
(names checked against registries), :mod:`.loading` (YAML, overrides, file checks,
:func:`load_config`), :mod:`.errors` (:class:`ConfigError` and the messages), :mod:`.introspect`
(the schema as data) and :mod:`.reference` (the generated key reference).
"""

from uaclm_dist.config.errors import ConfigError
from uaclm_dist.config.introspect import valid_keys
from uaclm_dist.config.loading import MODEL_ALIASES, REPO_ROOT, load_config, parse_overrides
from uaclm_dist.config.reference import reference_markdown
from uaclm_dist.config.schema import (
    DataConfig,
    DistributedConfig,
    EvalConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    ObjectiveConfig,
    OODDataConfig,
    OptimConfig,
    QuantizationConfig,
    RunConfig,
    TinyModelConfig,
)

__all__ = [
    "ConfigError",
    "RunConfig",
    "ModelConfig",
    "TinyModelConfig",
    "QuantizationConfig",
    "LoraConfig",
    "DataConfig",
    "OODDataConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "DistributedConfig",
    "EvalConfig",
    "LoggingConfig",
    "MODEL_ALIASES",
    "REPO_ROOT",
    "load_config",
    "parse_overrides",
    "valid_keys",
    "reference_markdown",
]
