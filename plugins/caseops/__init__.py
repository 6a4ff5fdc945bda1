"""CaseOps: train on lower-cased text with lossless case operators, score bytes of the original text.

Origin: PR #1729 (romeerp), the ``lossless_caps_caseops_v1`` transform and its SP8192 tokenizer
(``fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model``, operators at ids 4-7); carried by
#1736 (dexhunter), #1769, #1787 (nprime06), #1851 and #1855 (codemath3000), whose
``prepare_caseops_data.py`` writes the canonical per-token byte sidecar.

The technique is data: ``golf data prepare --caseops`` (``golf_core.data.prepare_dataset(...,
caseops=True)``) rewrites every document with :func:`~plugins.caseops.transform.encode` (TITLE,
ALLCAPS, CAPNEXT and ESC operators in the private-use area, text lower-cased; exactly invertible
by :func:`~plugins.caseops.transform.decode`), tokenizes it, and writes ``fineweb_val_bytes_*.bin``
beside the validation shards: the original UTF-8 bytes of every validation token (operators and
BOS 0), which the trainer's scoring uses as the bits-per-byte denominator whenever it is present.
At run time this technique only makes sure the dataset is such a dataset, so that a stack that
names it cannot silently train on plain text or score transformed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from golf_core import GolfError, Technique, hookimpl, param
from golf_core.data.prepare import CASEOPS_TRANSFORM, check_caseops_tokenizer, read_manifest
from golf_core.data.shards import find_byte_sidecars

from .transform import ALLCAPS, CAPNEXT, ESC, TITLE, CaseOpsError, decode, encode, original_byte_counts

__all__ = ["ALLCAPS", "CAPNEXT", "ESC", "TITLE", "CaseOps", "CaseOpsError", "decode", "encode", "original_byte_counts"]

# Params.variant -> the manifest's text_transform.
VARIANTS = {"v1": CASEOPS_TRANSFORM}


class CaseOps(Technique):
    """CaseOps: train on lower-cased text with lossless case operators, score bytes of the original text.

    Origin PR #1729 (romeerp); kept by #1736, #1769, #1787, #1851 and #1855.
    """

    name = "caseops"
    stage = "data"
    origin_pr = 1729
    credits = "romeerp (PR #1729, transform and tokenizer); dexhunter (#1736); nprime06 (#1787); codemath3000 (#1855, canonical byte sidecar)"

    @dataclass(frozen=True, kw_only=True)
    class Params:
        variant: str = param("v1", "case transform the dataset must have been prepared with (v1 = lossless_caps_caseops_v1)", choices=tuple(VARIANTS))

    @hookimpl
    def golf_configure(self, ctx):
        transform = VARIANTS[self.params.variant]
        data_dir = ctx.data_dir
        if data_dir is None:
            raise GolfError("techniques.caseops needs a dataset directory; set data.dataset to one built by `golf data prepare --caseops`")
        manifest = read_manifest(data_dir)
        found = manifest.get("text_transform")
        if found != transform:
            how = "without it" if found is None else f"with {found!r}"
            raise GolfError(
                f"stack enables caseops but DATASET {data_dir} was prepared {how}; run golf data prepare --caseops "
                f"--tokenizer fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model --input ... --out ... "
                f"and point data.dataset at it, or --disable caseops"
            )
        if not find_byte_sidecars(data_dir):
            raise GolfError(
                f"stack enables caseops but DATASET {data_dir} has no fineweb_val_bytes_*.bin byte sidecar, so bits per "
                "byte would count transformed bytes; re-run golf data prepare --caseops"
            )
        # data.tokenizer may point away from the dataset's own model.
        if ctx.tokenizer is not None:
            check_caseops_tokenizer(ctx.tokenizer, ctx.cfg.data.tokenizer or data_dir / "tokenizer.model")

    @hookimpl
    def golf_report_header(self, ctx):
        sidecars = find_byte_sidecars(ctx.data_dir)
        return [f"caseops: {VARIANTS[self.params.variant]} dataset; bits per byte from {len(sidecars)} byte sidecar shard(s)"]
