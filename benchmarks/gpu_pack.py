"""The data a GPU call carries, as one archive that fits, and its unpacking on the GPU machine.

A device call may carry 64 MiB, counted as disk usage in 4 KiB blocks: thousands of small PNGs cost far
more than their bytes, one archive costs its bytes. ``pack`` makes that archive from the original folders:

- images as WebP, lossless or at a stated quality (``--quality``; the smallest error is measured and written
  into the archive's index: largest and mean difference in grey levels);
- binary masks (lung, infection; every folder whose name holds "mask") losslessly, as bits compressed with
  LZMA (about 300 B a mask);
- every other file as it is (``labels.csv``...);
- the split made HERE from the original PNGs (``lungcls data split``: duplicate groups and patients
  searched on the exact pixels), with its paths relative to the archive, and the SHA-256 of each original file;
  with ``--infection-split`` also the infection masks' split the built-in infection segmenter is trained on
  (``--masks infection --test 0.15 --seed 0``, as ``scripts/builtin_infection.sh`` makes it).

Nothing is left out: the archive holds every file of the given folders, and ``pack`` refuses to write one
that would not fit beside the checkout with the stated margin (``--margin-mib``, default 4).
``unpack`` on the GPU machine writes the folders back (PNG of the decoded pixels), checks every lossless
file's SHA-256, and writes the split with paths under the destination, ready for ``train-seg``/``train-cls``.

    python benchmarks/gpu_pack.py pack ../shared/data/covidqu-infseg --out .gpu_data/covidqu.tar --quality 95 --split
    python benchmarks/gpu_pack.py unpack .gpu_data/covidqu.tar /tmp/data        # on the GPU machine
    python benchmarks/gpu_pack.py size --carry .whl .gpu_data/covidqu.tar        # what a call would carry
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
LIMIT_KIB = 64 * 1024  # what one device call may carry
BLOCK = 4096
LOSSLESS = 101  # OpenCV's WebP quality above 100 means lossless


def disk_kib(paths: list[Path]) -> int:
    """Disk usage in KiB as the device tool counts it: every file rounded up to 4 KiB blocks, every folder one block."""
    total = 0
    for path in paths:
        entries = [path] if path.is_file() else [path, *path.rglob("*")]
        for p in entries:
            if p.is_symlink() or not p.exists():
                continue
            size = p.stat().st_size if p.is_file() else BLOCK
            total += -(-size // BLOCK) * BLOCK // 1024
    return total


NEVER_CARRIED = {".git", ".gpu_data", ".whl", ".venv", "__pycache__", ".pytest_cache"}  # ignored or carried apart


def checkout_files(repo: Path = REPO) -> list[Path]:
    """What every call carries: tracked files and untracked files git does not ignore (in a copy of the files
    that is no git checkout, as in the rehearsal: every file but those git ignores here)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True)  # fmt: skip
    if listed.returncode == 0 and (repo / ".git").exists():
        return [repo / f for f in listed.stdout.decode().split("\0") if f and (repo / f).is_file()]
    return [f for f in repo.rglob("*") if f.is_file() and not NEVER_CARRIED & set(f.relative_to(repo).parts)]


def travel_kib(carry: list[Path], repo: Path = REPO) -> int:
    """KiB one call carries: the checkout (its files, and a block for each folder) plus the carried paths."""
    files = checkout_files(repo)
    folders = {d for f in files for d in f.relative_to(repo).parents}
    return disk_kib(files) + len(folders) * BLOCK // 1024 + disk_kib(carry)


def _is_mask(rel: Path) -> bool:
    return any("mask" in part.lower() for part in rel.parts[:-1])


def _pixels_sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def _encode_image(path: Path, quality: int) -> tuple[bytes, int, float, str]:
    """WebP bytes of a grey image, the largest and the mean absolute error of its decoding, its pixels' SHA-256."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise SystemExit(f"{path}: not an 8-bit grey PNG; the pack holds the folders of 8-bit grey CXRs only")
    ok, data = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, quality])
    back = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    err = np.abs(back.astype(np.int16) - pixels)
    return data.tobytes(), int(err.max()), float(err.mean()), _pixels_sha256(pixels)


def _read_mask(path: Path) -> np.ndarray | None:
    """A mask as booleans when it holds 0 and 255 only (else None: it travels as a plain file)."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint8 or pixels.ndim != 2 or not np.isin(pixels, (0, 255)).all():
        return None
    return pixels > 0


def pack(
    roots: list[Path], out: Path, quality: int, split: bool, margin_mib: float, carry: list[Path], infection: bool = False
) -> dict:
    """Write the archive of ``roots`` to ``out`` (see the module's docstring); returns its index."""
    files = sorted((root, f) for root in roots for f in root.rglob("*") if f.is_file())
    index, members = _contents(files, quality)
    index["roots"] = [r.name for r in roots]
    if split:
        index["split"] = _split_csv(roots)
    if infection:
        index["split_infection"] = _split_csv(roots, ["--masks", "infection", "--test", "0.15"])
    members["index.json.xz"] = lzma.compress(json.dumps(index).encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    with tarfile.open(tmp, "w") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    kib, limit = travel_kib([tmp, *carry]), LIMIT_KIB - int(margin_mib * 1024)
    if kib > limit:
        tmp.unlink()
        raise SystemExit(f"{out}: the call would carry {kib} KiB (checkout + {', '.join(map(str, carry)) or 'nothing'} + "
                         f"archive) > {limit} KiB (64 MiB less a {margin_mib} MiB margin); nothing written")  # fmt: skip
    tmp.replace(out)
    index.update(travel_kib=kib, archive_bytes=out.stat().st_size)
    return index


def _contents(files: list[tuple[Path, Path]], quality: int) -> tuple[dict, dict[str, bytes]]:
    """The index and the members (images, masks, other files) of an archive of ``files`` ((root, file) pairs)."""
    images = [(r, f) for r, f in files if f.suffix.lower() == ".png" and not _is_mask(f.relative_to(r))]
    masks = [(r, f) for r, f in files if f.suffix.lower() == ".png" and _is_mask(f.relative_to(r))]
    with ThreadPoolExecutor() as pool:
        encoded = list(pool.map(lambda rf: _encode_image(rf[1], quality), images))
        bits = list(pool.map(lambda rf: _read_mask(rf[1]), masks))
    blob, entries = io.BytesIO(), []

    def name(root: Path, f: Path) -> str:
        return (Path(root.name) / f.relative_to(root)).as_posix()

    for (root, f), (data, _, _, pixels) in zip(images, encoded):
        entries.append({"path": name(root, f), "kind": "webp", "offset": blob.tell(), "length": len(data),
                        "pixels_sha256": pixels})  # fmt: skip
        blob.write(data)
    stack = [b for b in bits if b is not None]
    plain = [(r, f) for (r, f), b in zip(masks, bits) if b is None] + [
        (r, f) for r, f in files if f.suffix.lower() != ".png"
    ]
    k = 0
    for (root, f), b in zip(masks, bits):
        if b is not None:
            entries.append({"path": name(root, f), "kind": "mask", "index": k, "shape": list(b.shape),
                            "pixels_sha256": _pixels_sha256(b * np.uint8(255))})  # fmt: skip
            k += 1
    others = io.BytesIO()  # plain files (CSV, JSON, odd masks): compressed together
    for root, f in plain:
        data = f.read_bytes()
        entries.append({"path": name(root, f), "kind": "file", "offset": others.tell(), "length": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
        others.write(data)
    shapes = {tuple(b.shape) for b in stack}
    packed = b"".join(np.packbits(b).tobytes() for b in stack)
    index = {
        "files": len(files),
        "images": len(images),
        "masks": len(stack),
        "quality": "lossless" if quality == LOSSLESS else quality,
        "image_error": {
            "max": max((e[1] for e in encoded), default=0),  # grey levels
            "mean": float(np.mean([e[2] for e in encoded])) if encoded else 0.0,
        },  # fmt: skip
        "mask_shapes": [list(s) for s in shapes],
        "entries": entries,
    }
    members = {
        "images.bin": blob.getvalue(),
        "masks.xz": lzma.compress(packed),
        "files.xz": lzma.compress(others.getvalue()),
    }
    return index, members


def _split_csv(roots: list[Path], options: list[str] | None = None) -> str:
    """``lungcls data split`` of the original folders (with ``options``; default ``--test 0.2``), paths made relative
    to the archive (``{DATA}/<root>/...``)."""

    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "split.csv"
        cmd = [sys.executable, "-m", "lungcls", "data", "split", *map(str, roots), "--out", str(csv_path),
               *(options or ["--test", "0.2"]), "--seed", "0", "-q", "--force"]  # fmt: skip
        subprocess.run(cmd, check=True)
        text = csv_path.read_text()
    for root in roots:
        text = text.replace(str(root.resolve()) + "/", "{DATA}/" + root.name + "/")
    outside = [line for line in text.splitlines()[1:] if not line.startswith("{DATA}/")]
    if outside:
        raise SystemExit(f"the split names a file outside the packed folders: {outside[0][:200]}")
    return text


def unpack(archive: Path, dest: Path, workers: int | None = None) -> dict:
    """Write the folders of ``archive`` under ``dest`` (PNG of the decoded pixels) and the split beside them."""
    with tarfile.open(archive) as tar:
        read = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    index = json.loads(lzma.decompress(read["index.json.xz"]))
    blob, others = read["images.bin"], lzma.decompress(read["files.xz"])
    stack = np.frombuffer(lzma.decompress(read["masks.xz"]), np.uint8)
    shape = index["mask_shapes"][0] if index["mask_shapes"] else [0, 0]
    per_mask = -(-shape[0] * shape[1] // 8)
    lossless = index["quality"] == "lossless"

    def write(e: dict) -> str | None:
        out = dest / e["path"]
        out.parent.mkdir(parents=True, exist_ok=True)
        if e["kind"] == "file":
            data = others[e["offset"] : e["offset"] + e["length"]]
            out.write_bytes(data)
            return None if hashlib.sha256(data).hexdigest() == e["sha256"] else e["path"]
        if e["kind"] == "mask":
            bits = stack[e["index"] * per_mask : (e["index"] + 1) * per_mask]
            pixels = np.unpackbits(bits)[: shape[0] * shape[1]].reshape(e["shape"]) * np.uint8(255)
        else:
            data = np.frombuffer(blob[e["offset"] : e["offset"] + e["length"]], np.uint8)
            pixels = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(out), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        same = e["kind"] == "webp" and not lossless  # lossy pixels cannot match the original file's hash
        return None if same or _pixels_match(out, e) else e["path"]

    with ThreadPoolExecutor(workers) as pool:
        bad = [p for p in pool.map(write, index["entries"]) if p]
    if bad:
        raise SystemExit(f"{len(bad)} unpacked files differ from the originals, e.g. {bad[0]}")
    for key, name in (("split", "split.csv"), ("split_infection", "split-infection.csv")):
        if key in index:
            (dest / name).write_text(index[key].replace("{DATA}", str(dest.resolve())))
    return {k: v for k, v in index.items() if k != "entries" and not k.startswith("split")}


def _pixels_match(out: Path, e: dict) -> bool:
    """The written PNG holds the original pixels (PNG files written again differ in their bytes, not their pixels)."""
    return _pixels_sha256(cv2.imread(str(out), cv2.IMREAD_UNCHANGED)) == e["pixels_sha256"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="one archive of data folders, sized for a device call")
    p.add_argument("roots", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quality", default="lossless", help="'lossless' or a WebP quality (1-100) for the images")
    p.add_argument("--split", action="store_true", help="make the split here, from the original PNGs, and ship it")
    p.add_argument("--infection-split", action="store_true", help="also the infection masks' split (covidqu-infseg)")
    p.add_argument("--margin-mib", type=float, default=4.0, help="room left under the 64 MiB a call carries")
    p.add_argument("--carry", nargs="*", type=Path, default=[], help="other paths the same call carries (.whl)")
    p.add_argument("--force", action="store_true", help="replace an existing archive")
    u = sub.add_parser("unpack", help="the folders and the split back, on the GPU machine")
    u.add_argument("archive", type=Path)
    u.add_argument("dest", type=Path)
    u.add_argument("--force", action="store_true", help="unpack into a folder that holds files")
    s = sub.add_parser("size", help="KiB a call would carry (checkout + these paths), as the device tool counts it")
    s.add_argument("--carry", nargs="*", type=Path, default=[])
    args = parser.parse_args()
    if args.command == "pack" and args.out.exists() and not args.force:
        parser.exit(2, f"error: {args.out} exists; pass --force to replace it\n")
    if args.command == "unpack" and args.dest.is_dir() and any(args.dest.iterdir()) and not args.force:
        parser.exit(2, f"error: {args.dest} holds files; pass --force to unpack into it\n")
    if args.command == "pack":
        quality = LOSSLESS if args.quality == "lossless" else int(args.quality)
        index = pack(args.roots, args.out, quality, args.split, args.margin_mib, args.carry, args.infection_split)
        print(json.dumps({k: v for k, v in index.items() if k != "entries" and not k.startswith("split")}, indent=1))
    elif args.command == "unpack":
        print(json.dumps(unpack(args.archive, args.dest), indent=1))
    else:
        kib = travel_kib(args.carry)
        print(f"{kib} KiB of {LIMIT_KIB} KiB ({LIMIT_KIB - kib} KiB to spare)")


if __name__ == "__main__":
    main()
