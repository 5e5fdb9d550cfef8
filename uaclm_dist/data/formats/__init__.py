"""Data formats: the :data:`DATA_FORMATS` registry and the built-in formats, one module each.

Built in: ``coqa``, ``triviaqa``, ``squad``, ``bioasq``, ``okvqa`` (the public QA / VQA datasets
in their released files), ``fanoutqa``, ``easyvqa`` (data shipped in installed packages),
``arithmetic`` (generated out-of-domain questions) and
``jsonl``, ``parquet``, ``hf`` (generic rows mapped by ``data.field_map``). A new format is one
module with a reader and one ``DATA_FORMATS.register(DataFormat(...))`` call (see
:mod:`.registry`); import that module before loading a config that names it. Readers:
``uaclm_dist.data.formats.<name>.read_<name>``.
"""

from uaclm_dist.data.formats.registry import DATA_FORMATS, DataFormat

# The built-in formats register themselves on import, in the order their names are listed.
# isort: off
from uaclm_dist.data.formats import coqa, triviaqa, squad, bioasq, okvqa  # noqa: F401
from uaclm_dist.data.formats import fanoutqa, easyvqa, arithmetic, jsonl, parquet, hf  # noqa: F401
# isort: on

__all__ = ["DATA_FORMATS", "DataFormat"]
