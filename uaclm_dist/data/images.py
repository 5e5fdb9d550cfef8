"""Image rows checked before any cluster work: each image file exists and decodes, and the model
takes images at all (a text-only model would silently drop them)."""

from __future__ import annotations

from collections.abc import Iterable

from uaclm_dist.data.records import DataError, QARecord

__all__ = ["check_record_images"]


def check_record_images(records: Iterable[QARecord], *, takes_images: bool, family: str) -> int:
    """Check every image record; returns how many records have an image.

    Raises:
        DataError: an image record with a text-only model family, or an image file that is
            missing or does not decode (the message names the record, its source file and the
            image file).
    """
    from PIL import Image, UnidentifiedImageError

    n_images = 0
    for record in records:
        if record.image is None:
            continue
        where = f"{record.source or 'data'}: record {record.id!r}"
        if not takes_images:
            raise DataError(
                f"{where} has an image ({record.image!r}), but model.family {family!r} takes "
                "text only; use model.family: vision_lm with a vision-language model"
            )
        try:
            with Image.open(record.image) as image:
                image.verify()  # reads the whole file: truncated or corrupt data fails here
        except FileNotFoundError:
            raise DataError(f"{where}: image {record.image!r} not found") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{where}: image {record.image!r} cannot be read as an image "
                            f"({exc})") from None  # fmt: skip
        n_images += 1
    return n_images
