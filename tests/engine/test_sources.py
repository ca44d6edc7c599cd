"""Tests for engine/data/sources.py: folder scans, safe zip extraction, and cached data set downloads (local server only)."""
import io
import os
import socket
import stat
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from filelock import FileLock

from engine.data import sources
from engine.errors import UserError
from engine.data.sources import (FASTAI_DATASETS, ScanStopped, ZipLimits, clean_stale_extractions, dataset_path,
                            dataset_url, delete_upload, download_dataset, extract_zip, is_downloaded, scan_folder)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv("LOUPE_DATASETS_URL", raising=False)


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def everything_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


# ---------------------------------------------------------------- scan_folder

def test_scan_folder_finds_images_recursively_and_counts_skipped(tmp_path):
    root = tmp_path / "pets"
    expected = [write(root / "cats" / "a.jpg"), write(root / "cats" / "B.JPG"),
                write(root / "dogs" / "sub" / "c.png"), write(root / "dogs" / "d.TIFF")]
    write(root / "list.mat")
    write(root / "notes.txt")
    for hidden in [".hidden.jpg", ".git/x.jpg", "__MACOSX/cats/._a.jpg", "__MACOSX/y.jpg", ".loupe-trash/z.jpg"]:
        write(root / hidden)

    scan = scan_folder(str(root))

    assert scan.root == root.resolve()
    assert scan.images == sorted(p.resolve() for p in expected)
    assert all(p.is_absolute() for p in scan.images)
    assert scan.skipped == 2
    assert scan.skipped_examples == ["list.mat", "notes.txt"]


def test_scan_folder_keeps_at_most_five_skipped_examples(tmp_path):
    write(tmp_path / "img.png")
    for i in range(7):
        write(tmp_path / f"f{i}.csv")
    scan = scan_folder(tmp_path)
    assert scan.skipped == 7
    assert scan.skipped_examples == [f"f{i}.csv" for i in range(5)]


def test_scan_folder_ignores_links_leaving_the_root(tmp_path):
    outside = tmp_path / "outside"
    write(outside / "secret.jpg")
    root = tmp_path / "root"
    inside = write(root / "real" / "a.jpg")
    os.symlink(outside, root / "linked_dir")
    os.symlink(outside / "secret.jpg", root / "linked.jpg")
    os.symlink(root / "real", root / "loop")  # inside the root, but already visited via real/

    scan = scan_folder(root)

    assert [p.name for p in scan.images] == ["a.jpg"]
    assert scan.images[0].resolve() == inside.resolve()


def test_scan_folder_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="holds no images"):
        scan_folder(tmp_path)


def test_scan_folder_without_images_names_the_other_files(tmp_path):
    write(tmp_path / "annotations" / "list.mat")
    with pytest.raises(UserError, match=r"holds no images \(found 1 other files such as annotations/list.mat"):
        scan_folder(tmp_path)


def test_scan_folder_missing_path_and_file_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        scan_folder(tmp_path / "nope")
    with pytest.raises(UserError, match="not a folder"):
        scan_folder(write(tmp_path / "a.jpg"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX system folders")
@pytest.mark.parametrize("folder, message", [
    ("/", "the top of the whole disk"), ("/proc", "does not scan /proc "), ("/proc/self", "does not scan /proc "),
    ("/sys", "does not scan /sys "), ("/dev", "does not scan /dev "),
])
def test_scan_folder_refuses_the_disk_and_system_folders(folder, message):
    if not os.path.isdir(folder):
        pytest.skip(f"{folder} is not on this machine")
    with pytest.raises(UserError, match=message):
        scan_folder(folder)


def test_scan_folder_lists_broken_links_and_survives_link_loops(tmp_path):
    root = tmp_path / "root"
    image = write(root / "sub" / "a.png")
    os.symlink(root / "nowhere.png", root / "gone.png")
    os.symlink(root / "loop-b", root / "loop-a")  # a loop of links: points nowhere
    os.symlink(root / "loop-a", root / "loop-b")
    os.symlink(root / "self", root / "self")
    os.symlink(root, root / "sub" / "up")  # a folder loop: back to the root
    os.symlink("..", root / "sub" / "parent")

    scan = scan_folder(root)

    assert scan.images == [image.resolve()]
    assert scan.broken_links == ["gone.png", "loop-a", "loop-b", "self"]
    assert scan.unreadable == [] and scan.skipped == 0


def test_scan_folder_skips_and_lists_unreadable_subfolders(tmp_path, monkeypatch):
    root = tmp_path / "root"
    image = write(root / "ok" / "a.png")
    write(root / "locked" / "b.png")
    write(root / "locked" / "deeper" / "c.png")
    real_scandir = os.scandir

    def scandir(path):  # as for a folder without permission (root may read anything, so chmod cannot show it)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    scan = scan_folder(root)
    assert scan.images == [image.resolve()]
    assert scan.unreadable == ["locked"]


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="chmod does not stop root (or Windows)")
def test_scan_folder_with_a_real_chmod_000_subfolder(tmp_path):
    image = write(tmp_path / "ok" / "a.png")
    write(tmp_path / "locked" / "b.png")
    (tmp_path / "locked").chmod(0)
    try:
        scan = scan_folder(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert scan.images == [image.resolve()] and scan.unreadable == ["locked"]


def test_scan_folder_unreadable_root_is_a_user_error(tmp_path, monkeypatch):
    write(tmp_path / "a.png")

    def scandir(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(sources.os, "scandir", scandir)
    with pytest.raises(UserError, match=r"Loupe cannot read the folder '.*' \(permission denied\)"):
        scan_folder(tmp_path)


def test_scan_folder_only_unreadable_subfolders_says_so(tmp_path, monkeypatch):
    write(tmp_path / "locked" / "a.png")
    real_scandir = os.scandir
    monkeypatch.setattr(sources.os, "scandir", lambda path: (_ for _ in ()).throw(PermissionError(13, "denied"))
                        if Path(path).name == "locked" else real_scandir(path))
    with pytest.raises(UserError, match="1 of its subfolders are not readable"):
        scan_folder(tmp_path)


def test_scan_folder_gives_up_past_max_files(tmp_path):
    for i in range(30):
        write(tmp_path / "many" / f"{i}.png")
    with pytest.raises(UserError, match="holds more than 25 files and folders, more than Loupe scans"):
        scan_folder(tmp_path, max_files=25)
    assert len(scan_folder(tmp_path, max_files=31).images) == 30  # 30 files and the folder 'many'


def test_scan_folder_reports_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SCAN_PROGRESS_EVERY", 10)
    for i in range(25):
        write(tmp_path / f"{i}.png")
    write(tmp_path / "notes.txt")
    calls = []
    scan_folder(tmp_path, progress=lambda looked_at, images: calls.append((looked_at, images)))
    # entries are counted as the folder is listed; images once the listing is sorted and read
    assert calls == [(10, 0), (20, 0), (26, 25)]


def test_scan_folder_stops_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "SCAN_PROGRESS_EVERY", 10)
    for i in range(25):
        write(tmp_path / f"{i}.png")
    stop = threading.Event()
    with pytest.raises(ScanStopped, match="stopped after 11 files and folders; nothing was loaded"):
        scan_folder(tmp_path, progress=lambda looked_at, images: stop.set(), stop=stop)
    assert isinstance(ScanStopped("x"), UserError)


# ---------------------------------------------------------------- extract_zip

def make_zip(entries: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buf.getvalue()


GOOD = {"pets/cat/1.jpg": b"\xff\xd8cat", "pets/dog/2.png": bytes(range(256)) * 10,
        "pets/readme.txt": b"\0" * 10_000, "__MACOSX/pets/._1.jpg": b"junk"}


def test_extract_zip_good(tmp_path):
    dest_root = tmp_path / "uploads"
    out = extract_zip(make_zip(GOOD, zipfile.ZIP_DEFLATED), "my pets.zip", dest_root=dest_root)

    assert out == dest_root / "my-pets"
    for name, data in GOOD.items():
        if not name.startswith("__MACOSX"):
            assert (out / name).read_bytes() == data
    assert not (out / "__MACOSX").exists()
    assert os.listdir(dest_root) == ["my-pets"]  # no temporary folder left behind


def test_extract_zip_accepts_path_and_file_object(tmp_path):
    zip_path = write(tmp_path / "in.zip", make_zip({"a/b.png": b"png"}))
    out1 = extract_zip(zip_path, "in.zip", dest_root=tmp_path / "u")
    with open(zip_path, "rb") as f:
        out2 = extract_zip(f, "in.zip", dest_root=tmp_path / "u")
    assert (out1 / "a" / "b.png").read_bytes() == (out2 / "a" / "b.png").read_bytes() == b"png"


def test_extract_zip_name_collision_appends_number(tmp_path):
    data = make_zip({"x.png": b"1"})
    names = [extract_zip(data, "my pets.zip", dest_root=tmp_path).name for _ in range(3)]
    assert names == ["my-pets", "my-pets-2", "my-pets-3"]


def test_extract_zip_default_destination_is_loupe_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    out = extract_zip(make_zip({"x.png": b"1"}), "Holiday Photos!.ZIP")
    assert out == tmp_path / "home" / "uploads" / "Holiday-Photos"


def test_extract_zip_refuses_parent_dir_entry_and_writes_nothing(tmp_path):
    dest_root = tmp_path / "a" / "uploads"
    data = make_zip({"good.txt": b"fine", "../evil.txt": b"evil"})
    with pytest.raises(UserError) as err:
        extract_zip(data, "evil.zip", dest_root=dest_root)
    assert "'../evil.txt'" in str(err.value)
    assert "Nothing was extracted" in str(err.value)
    assert list(tmp_path.rglob("evil.txt")) == []
    assert list(tmp_path.rglob("good.txt")) == []
    assert os.listdir(dest_root) == []


@pytest.mark.parametrize("bad", ["/abs-evil.txt", "C:/evil.txt", "c:evil.txt", "..\\evil.txt",
                                 "ok/..\\..\\evil.txt", "a/../../evil.txt"])
def test_extract_zip_refuses_absolute_drive_and_backslash_paths(tmp_path, bad):
    dest_root = tmp_path / "uploads"
    with pytest.raises(UserError) as err:
        extract_zip(make_zip({"good.txt": b"ok", bad: b"evil"}), "x.zip", dest_root=dest_root)
    assert bad in str(err.value)
    assert os.listdir(dest_root) == []
    assert not Path("/abs-evil.txt").exists()


def test_extract_zip_refuses_symlink_entry(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", b"ok")
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3  # unix
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UserError, match=r"'link.png' is a symbolic link"):
        extract_zip(buf.getvalue(), "x.zip", dest_root=tmp_path)
    assert os.listdir(tmp_path) == []


def test_extract_zip_refuses_too_many_files(tmp_path):
    data = make_zip({f"{i}.png": b"x" for i in range(4)})
    with pytest.raises(UserError, match="4 entries, more than the limit of 3"):
        extract_zip(data, "x.zip", limits=ZipLimits(max_files=3), dest_root=tmp_path)
    assert os.listdir(tmp_path) == []
    assert extract_zip(data, "x.zip", limits=ZipLimits(max_files=4), dest_root=tmp_path).is_dir()


def test_extract_zip_refuses_total_size_over_cap(tmp_path):
    data = make_zip({"a.png": b"a" * 600, "b.png": b"b" * 600})
    with pytest.raises(UserError, match="'b.png'"):
        extract_zip(data, "x.zip", limits=ZipLimits(max_total_bytes=1000), dest_root=tmp_path)
    assert os.listdir(tmp_path) == []


def test_extract_zip_refuses_suspicious_ratio(tmp_path):
    data = make_zip({"bomb.bin": b"\0" * (2 * 1024 * 1024)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(UserError, match="'bomb.bin'.*zip bomb"):
        extract_zip(data, "x.zip", dest_root=tmp_path)
    assert os.listdir(tmp_path) == []


def test_extract_zip_refuses_encrypted_entry(tmp_path):
    data = bytearray(make_zip({"secret.png": b"data"}))
    # set the "encrypted" flag bit in the local header (offset 6) and central directory (offset 8)
    data[data.index(b"PK\x03\x04") + 6] |= 1
    data[data.index(b"PK\x01\x02") + 8] |= 1
    with pytest.raises(UserError, match="'secret.png' is password-protected"):
        extract_zip(bytes(data), "x.zip", dest_root=tmp_path)
    assert os.listdir(tmp_path) == []


def test_extract_zip_refuses_bytes_that_are_not_a_zip(tmp_path):
    with pytest.raises(UserError, match="'photo.zip' is not a zip file"):
        extract_zip(b"this is not a zip at all", "photo.zip", dest_root=tmp_path)
    assert os.listdir(tmp_path) == []


def test_extract_zip_damaged_entry_midway_leaves_nothing(tmp_path):
    data = bytearray(make_zip({"a.png": b"A" * 100, "b.png": b"B" * 100}))
    data[data.index(b"B" * 100)] = ord("C")  # breaks b.png's CRC after a.png was written
    with pytest.raises(UserError, match="damaged"):
        extract_zip(bytes(data), "x.zip", dest_root=tmp_path)
    assert os.listdir(tmp_path) == []


def test_extract_zip_refuses_many_small_entries_that_unpack_to_far_more(tmp_path):
    # each entry is under the 1 MiB the per-entry ratio check needs; together they unpack to ~550 times the zip
    entries = {f"img/{i}.png": b"\0" * 20_000 for i in range(100)}
    data = make_zip(entries, zipfile.ZIP_DEFLATED)
    limits = ZipLimits(total_ratio_min_bytes=1024**2)
    with pytest.raises(UserError, match=r"its \d\.\d KB unpack to 1\.9 MB, \d+ times as much, which looks like a zip bomb"):
        extract_zip(data, "x.zip", limits=limits, dest_root=tmp_path)
    assert os.listdir(tmp_path) == []
    # below the size where the whole-archive ratio is judged, the same kind of zip is fine
    assert extract_zip(make_zip({"a.png": b"\0" * 20_000}, zipfile.ZIP_DEFLATED), "x.zip", limits=limits,
                       dest_root=tmp_path).is_dir()


def test_the_zip_size_caps_what_its_entries_may_claim(tmp_path):
    # entries may share compressed bytes (an "overlapping" zip bomb): the ratio uses the zip's own size then
    data = make_zip({f"{i}.png": bytes(range(256)) * 1024 for i in range(8)})  # 2 MiB stored, ratio 1
    limits = ZipLimits(total_ratio_min_bytes=1024**2)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(sources._check_zip(zf, limits, packed_bytes=len(data))) == 8
        with pytest.raises(UserError, match="looks like a zip bomb"):
            sources._check_zip(zf, limits, packed_bytes=len(data) // 200)


def test_extract_zip_refuses_more_than_the_free_disk_space(tmp_path):
    data = make_zip({"a.png": b"a" * 1000})
    with pytest.raises(UserError, match="but the disk has .* free and Loupe keeps .* of it free. Free some space"):
        extract_zip(data, "x.zip", limits=ZipLimits(disk_margin_bytes=2**62), dest_root=tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("entries, found", [
    ({}, "no files"),
    ({"empty/": b""}, "no files"),
    ({"notes.txt": b"x", "data/list.csv": b"y"}, "only 2 other files such as notes.txt, data/list.csv"),
    ({"__MACOSX/._a.png": b"x", ".hidden.png": b"y"}, "only 1 other file such as .hidden.png"),
])
def test_extract_zip_without_images_leaves_nothing(tmp_path, entries, found):
    with pytest.raises(UserError, match=f"This zip holds no images \\({found}\\).*Nothing was extracted"):
        extract_zip(make_zip(entries), "x.zip", dest_root=tmp_path)
    assert os.listdir(tmp_path) == []


def test_clean_stale_extractions_removes_only_unlocked_leftovers(tmp_path):
    write(tmp_path / ".loupe-extract-crashed" / "a.png")  # left by a crash (no lock file, as older Loupes made)
    write(tmp_path / ".loupe-extract-crashed2" / "b.png")
    write(tmp_path / ".loupe-extract-crashed2.lock", b"")  # its lock file, no longer held
    write(tmp_path / ".loupe-extract-orphan.lock", b"")
    write(tmp_path / "my-pets" / "c.png")  # a finished upload
    live = FileLock(tmp_path / ".loupe-extract-live.lock")
    with live:  # another server unpacking right now
        write(tmp_path / ".loupe-extract-live" / "d.png")
        assert clean_stale_extractions(tmp_path) == 2
        assert sorted(os.listdir(tmp_path)) == [".loupe-extract-live", ".loupe-extract-live.lock", "my-pets"]
    assert clean_stale_extractions(tmp_path) == 1
    assert os.listdir(tmp_path) == ["my-pets"]
    assert clean_stale_extractions(tmp_path / "missing") == 0


def test_clean_stale_extractions_during_an_extraction_leaves_it_alone(tmp_path, monkeypatch):
    copy = sources._copy_zip_entry
    removed = []

    def copy_then_clean(*args):  # a second server starting up while this one unpacks
        removed.append(clean_stale_extractions(tmp_path))
        return copy(*args)

    monkeypatch.setattr(sources, "_copy_zip_entry", copy_then_clean)
    out = extract_zip(make_zip({"a/1.png": b"1", "a/2.png": b"2"}), "pets.zip", dest_root=tmp_path)
    assert removed == [0, 0]
    assert (out / "a" / "1.png").read_bytes() == b"1" and os.listdir(tmp_path) == ["pets"]


def test_clean_stale_extractions_default_is_loupe_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path))
    write(tmp_path / "uploads" / ".loupe-extract-x" / "a.png")
    write(tmp_path / "datasets" / ".loupe-extract-y" / "b.png")
    assert clean_stale_extractions() == 2
    assert os.listdir(tmp_path / "uploads") == os.listdir(tmp_path / "datasets") == []


def test_delete_upload_moves_it_to_loupes_trash(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    uploads = tmp_path / "home" / "uploads"
    first = extract_zip(make_zip(GOOD), "pets.zip")
    second = extract_zip(make_zip(GOOD), "pets.zip")
    assert (first.parent, first.name, second.name) == (uploads, "pets", "pets-2")

    moved = delete_upload(first)
    again = delete_upload(second)
    assert os.listdir(uploads) == []
    assert moved.parent.parent == again.parent.parent == tmp_path / "home" / "trash"
    assert moved.parent != again.parent and (moved.name, again.name) == ("pets", "pets-2")
    assert (moved / "pets" / "cat" / "1.jpg").read_bytes() == GOOD["pets/cat/1.jpg"]


@pytest.mark.parametrize("where", ["outside", "missing", "hidden", "link", "uploads itself"])
def test_delete_upload_refuses_anything_but_an_upload(tmp_path, where):
    uploads = tmp_path / "uploads"
    write(uploads / "real" / "a.png")
    write(uploads / ".loupe-extract-x" / "a.png")
    write(tmp_path / "elsewhere" / "b.png")
    os.symlink(tmp_path / "elsewhere", uploads / "link")
    folder = {"outside": tmp_path / "elsewhere", "missing": uploads / "nope", "hidden": uploads / ".loupe-extract-x",
              "link": uploads / "link", "uploads itself": uploads}[where]
    with pytest.raises(UserError, match="is not a data set in Loupe's uploads folder"):
        delete_upload(folder, uploads_dir=uploads)
    assert (tmp_path / "elsewhere" / "b.png").is_file() and (uploads / "real" / "a.png").is_file()


# ---------------------------------------------------------------- download_dataset

MNIST_FILES = {f"mnist_tiny/{split}/{label}/{i}.png": png_bytes(i)
               for i, (split, label) in enumerate([("train", 3), ("train", 3), ("train", 7),
                                                   ("valid", 3), ("valid", 7)])}
MNIST_FILES["mnist_tiny/labels.csv"] = b"name,label\n"


def make_tgz(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"evil"[:info.size]))
    return buf.getvalue()


@pytest.fixture
def server():
    """A local HTTP server: put bytes in .files[path]; .requests counts GETs; '/short.tgz' breaks off."""
    files: dict[str, bytes] = {}
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path == "/short.tgz":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"x" * 100)
                return
            if self.path not in files:
                self.send_error(404)
                return
            body = files[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.files, httpd.requests = files, requests
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist_tiny.tgz"


def assert_no_leftovers(root: Path):
    leftovers = [p for p in everything_under(root) if p.endswith(".part") or ".loupe-extract-" in p]
    assert leftovers == []


def test_registry_has_fastai_urls():
    assert FASTAI_DATASETS["PETS"].url == "https://s3.amazonaws.com/fast-ai-imageclas/oxford-iiit-pet.tgz"
    assert FASTAI_DATASETS["MNIST_SAMPLE"].url == "https://s3.amazonaws.com/fast-ai-sample/mnist_sample.tgz"
    assert FASTAI_DATASETS["MNIST_TINY"].url == "https://s3.amazonaws.com/fast-ai-sample/mnist_tiny.tgz"
    assert FASTAI_DATASETS["IMAGENETTE_160"].url == \
        "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
    assert FASTAI_DATASETS["PETS"].folder == "oxford-iiit-pet"
    assert FASTAI_DATASETS["PETS"].image_subdir == "images"
    assert all(key == ds.key for key, ds in FASTAI_DATASETS.items())


def test_dataset_path_uses_loupe_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(tmp_path / "home"))
    assert dataset_path("PETS") == tmp_path / "home" / "datasets" / "oxford-iiit-pet"
    assert dataset_path("MNIST_TINY", root=tmp_path) == tmp_path / "mnist_tiny"
    assert not is_downloaded("PETS")
    with pytest.raises(UserError, match="Unknown data set 'CATS'"):
        dataset_path("CATS")


def test_download_extracts_reports_progress_and_caches(tmp_path, server, monkeypatch):
    archive = make_tgz(MNIST_FILES)
    server.files["/mnist_tiny.tgz"] = archive
    monkeypatch.setattr(sources, "CHUNK", 1024)  # several chunks from a small archive
    calls = []

    path = download_dataset("MNIST_TINY", progress=lambda done, total: calls.append((done, total)),
                            root=tmp_path, url=server.base + "/mnist_tiny.tgz")

    assert path == tmp_path / "mnist_tiny"
    for name, data in MNIST_FILES.items():
        assert (tmp_path / name).read_bytes() == data
    assert (path / ".loupe-complete").is_file()
    assert is_downloaded("MNIST_TINY", root=tmp_path)
    assert not (tmp_path / "downloads" / "mnist_tiny.tgz").exists()
    assert_no_leftovers(tmp_path)
    assert len(calls) == -(-len(archive) // 1024) > 1
    assert [d for d, _ in calls] == sorted({d for d, _ in calls})  # strictly increasing
    assert calls[-1] == (len(archive), len(archive))
    assert {t for _, t in calls} == {len(archive)}
    assert server.requests == ["/mnist_tiny.tgz"]

    calls.clear()
    again = download_dataset("MNIST_TINY", progress=lambda d, t: calls.append((d, t)), root=tmp_path,
                             url=server.base + "/mnist_tiny.tgz")
    assert again == path
    assert server.requests == ["/mnist_tiny.tgz"]  # no new request
    assert calls == []
    # even an unreachable URL is never touched once the data set is there
    assert download_dataset("MNIST_TINY", root=tmp_path, url=closed_port_url()) == path


def test_download_uses_loupe_datasets_url_as_base(tmp_path, server, monkeypatch):
    server.files["/fast-ai-sample/mnist_tiny.tgz"] = make_tgz(MNIST_FILES)
    monkeypatch.setenv("LOUPE_DATASETS_URL", server.base + "/")
    assert dataset_url("MNIST_TINY") == server.base + "/fast-ai-sample/mnist_tiny.tgz"
    path = download_dataset("MNIST_TINY", root=tmp_path)
    assert (path / "train" / "3" / "0.png").read_bytes() == MNIST_FILES["mnist_tiny/train/3/0.png"]
    assert server.requests == ["/fast-ai-sample/mnist_tiny.tgz"]


def test_download_replaces_an_incomplete_folder(tmp_path, server):
    write(tmp_path / "mnist_tiny" / "half-done.png")  # no completion marker
    server.files["/mnist_tiny.tgz"] = make_tgz(MNIST_FILES)
    path = download_dataset("MNIST_TINY", root=tmp_path, url=server.base + "/mnist_tiny.tgz")
    assert not (path / "half-done.png").exists()
    assert (path / "labels.csv").read_bytes() == b"name,label\n"


def test_download_404_is_an_offline_user_error(tmp_path, server):
    with pytest.raises(UserError, match="offline.*404.*built-in data sets work offline"):
        download_dataset("MNIST_TINY", root=tmp_path, url=server.base + "/missing.tgz")
    assert not (tmp_path / "mnist_tiny").exists()
    assert_no_leftovers(tmp_path)
    assert not is_downloaded("MNIST_TINY", root=tmp_path)


def test_download_closed_port_is_an_offline_user_error(tmp_path):
    with pytest.raises(UserError, match="Could not download .*offline or the server is unreachable"):
        download_dataset("MNIST_TINY", root=tmp_path, url=closed_port_url(), timeout=5)
    assert not (tmp_path / "mnist_tiny").exists()
    assert_no_leftovers(tmp_path)


def test_download_cut_short_removes_the_part_file(tmp_path, server):
    with pytest.raises(UserError, match="offline"):
        download_dataset("MNIST_TINY", root=tmp_path, url=server.base + "/short.tgz")
    assert not (tmp_path / "mnist_tiny").exists()
    assert_no_leftovers(tmp_path)
    assert os.listdir(tmp_path / "downloads") == []


def test_download_cancelled_by_progress_leaves_nothing(tmp_path, server, monkeypatch):
    server.files["/mnist_tiny.tgz"] = make_tgz(MNIST_FILES)
    monkeypatch.setattr(sources, "CHUNK", 1024)

    def cancel(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_dataset("MNIST_TINY", progress=cancel, root=tmp_path, url=server.base + "/mnist_tiny.tgz")
    assert not (tmp_path / "mnist_tiny").exists()
    assert os.listdir(tmp_path / "downloads") == []


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink", "hardlink", "device"])
def test_download_refuses_unsafe_tar_members(tmp_path, server, kind):
    info = {"parent": tarfile.TarInfo("../x"), "absolute": tarfile.TarInfo("/tmp/loupe-evil-x"),
            "symlink": tarfile.TarInfo("mnist_tiny/x"), "hardlink": tarfile.TarInfo("mnist_tiny/x"),
            "device": tarfile.TarInfo("mnist_tiny/x")}[kind]
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "mnist_tiny/labels.csv"
    elif kind == "device":
        info.type = tarfile.CHRTYPE
    else:
        info.size = 4
    server.files["/mnist_tiny.tgz"] = make_tgz(MNIST_FILES, extra=[info])

    with pytest.raises(UserError) as err:
        download_dataset("MNIST_TINY", root=tmp_path, url=server.base + "/mnist_tiny.tgz")
    assert f"'{info.name}'" in str(err.value)
    assert "Nothing was extracted" in str(err.value)
    assert not (tmp_path / "x").exists()
    assert not Path("/tmp/loupe-evil-x").exists()
    assert not (tmp_path / "mnist_tiny").exists()
    assert not (tmp_path / "downloads" / "mnist_tiny.tgz").exists()
    assert_no_leftovers(tmp_path)


def test_download_of_a_non_archive_is_reported_as_damaged(tmp_path, server):
    server.files["/mnist_tiny.tgz"] = b"<html>not a tarball</html>"
    with pytest.raises(UserError, match="damaged"):
        download_dataset("MNIST_TINY", root=tmp_path, url=server.base + "/mnist_tiny.tgz")
    assert not (tmp_path / "mnist_tiny").exists()
    assert_no_leftovers(tmp_path)
