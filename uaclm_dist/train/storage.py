"""Ray Train's ``checkpoint_upload_fn``: a rank's checkpoint files published atomically.

Ray's default upload copies a folder file by file with pyarrow; a worker killed mid-copy leaves
prefixes of files that look whole. This upload writes each file through a ``.partial`` name and a
rename, and the rank's manifest last (:func:`uaclm_dist.train.manifest.publish`), so resume can
tell a finished checkpoint from a torn one.
"""

from __future__ import annotations

from pathlib import Path

from uaclm_dist.train.manifest import BeforeFileHook, publish


def publish_to_storage(checkpoint, checkpoint_dir_name: str, rank: int,
                       before_file: BeforeFileHook | None = None):  # fmt: skip
    """Publish the local ``checkpoint`` (a ``ray.train.Checkpoint`` folder holding this rank's
    files and manifest) into the run's storage as ``checkpoint_dir_name``; returns the
    persisted ``ray.train.Checkpoint``.

    uaclm's storage path is always a filesystem path (``RUN_DIR/ray``; shared between nodes on a
    multi-node cluster); any other filesystem falls back to Ray's own copy, still verified on
    resume by the manifests.
    """
    import pyarrow.fs
    import ray.train

    storage = ray.train.get_context().get_storage()
    if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return storage.persist_current_checkpoint(checkpoint, checkpoint_dir_name)
    # Ray's own check that this node sees the storage the controller created (a path local to
    # the head node is not visible from other nodes); without it a worker would write its files
    # to its own disk and the checkpoint would never verify.
    storage._check_validation_file()
    destination = storage.build_checkpoint_path_from_name(checkpoint_dir_name)
    publish(Path(checkpoint.path), Path(destination), rank, before_file=before_file)
    return ray.train.Checkpoint(filesystem=storage.storage_filesystem, path=destination)
