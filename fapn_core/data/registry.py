"""``open_dataset``: build a dataset from a short spec string (CLI / app friendly)."""

from __future__ import annotations

from .datasets import SegmentationDataset, Transform

SPEC_FORMS = (
    "synthetic[:n=200,seed=1,size=256x512]",
    "folder:/path/to/root",
    "cityscapes:/path/to/root[:val]",
    "ade20k:/path/to/root[:validation]",
    "coco-stuff-10k:/path/to/root[:test]",
    "coco-panoptic:/path/to/root[:val2017]",
)


def _spec_error(spec: str, why: str) -> ValueError:
    return ValueError(f"bad dataset spec {spec!r}: {why}; expected one of: " + ", ".join(SPEC_FORMS))


def _root_split(spec: str, rest: str, default: str) -> tuple[str, str]:
    head, sep, tail = rest.rpartition(":")
    if sep and tail and "/" not in tail and "\\" not in tail and head:
        return head, tail
    if not rest:
        raise _spec_error(spec, "missing root path")
    return rest, default


# readers opened as ``<kind>:<root>[:<split>]``: module, class, default split (imported on use: torch-free specs
# stay light)
_ROOT_SPLIT_KINDS = {
    "cityscapes": ("cityscapes", "CityscapesDataset", "val"),
    "ade20k": ("ade20k", "ADE20KDataset", "validation"),
    "coco-stuff-10k": ("coco_stuff", "CocoStuff10KDataset", "test"),
    "coco-panoptic": ("coco_panoptic", "CocoPanopticDataset", "val2017"),
}


def open_dataset(spec: str, transform: Transform | None = None) -> SegmentationDataset:
    """Open ``synthetic:...``, ``folder:<root>``, ``cityscapes:<root>[:<split>]``, ``ade20k:<root>[:<split>]``,
    ``coco-stuff-10k:<root>[:<split>]`` or ``coco-panoptic:<root>[:<split>]``."""
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "synthetic":
        from .datasets import SyntheticDataset

        kw: dict[str, object] = {"n": 200, "seed": 0, "size": (256, 512)}
        for item in filter(None, (s.strip() for s in rest.split(","))):
            key, eq, val = item.partition("=")
            key = key.strip().lower()
            try:
                if not eq or key not in kw:
                    raise ValueError
                kw[key] = tuple(int(v) for v in val.lower().split("x")) if key == "size" else int(val)
                if key == "size" and len(kw[key]) != 2:  # type: ignore[arg-type]
                    raise ValueError
            except ValueError:
                raise _spec_error(spec, f"cannot parse {item!r} (keys: n, seed, size=HxW)") from None
        return SyntheticDataset(kw["n"], kw["seed"], kw["size"], transform=transform)  # type: ignore[arg-type]
    if kind == "folder":
        from .datasets import FolderDataset

        if not rest:
            raise _spec_error(spec, "missing root path")
        return FolderDataset(rest, transform=transform)
    if kind in _ROOT_SPLIT_KINDS:
        module, cls, default_split = _ROOT_SPLIT_KINDS[kind]
        import importlib

        root, split = _root_split(spec, rest, default_split)
        return getattr(importlib.import_module(f".{module}", __package__), cls)(root, split, transform=transform)
    raise _spec_error(spec, f"unknown kind {kind!r}")
