"""Writes and reads of user paths: one clean error line, exclusive creation, modes kept, no leftovers."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from adaptkit.core.files import (
    _link_exclusive,
    check_destination,
    read_bytes_bounded,
    user_path_errors,
    write_atomic,
)
from adaptkit.errors import EmitError, PortError, Terminated

from .conftest import ROOT

STOCK = "mmpose::body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_new_file_gets_the_umask_default(tmp_path, umask_022):
    out = tmp_path / "f.py"
    write_atomic(out, "x = 1\n")
    assert out.read_text() == "x = 1\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640, 0o755])
def test_force_keeps_the_mode_of_the_replaced_file(tmp_path, umask_022, mode):
    out = tmp_path / "f.py"
    out.write_text("old\n")
    out.chmod(mode)
    write_atomic(out, "new\n", force=True)
    assert out.read_text() == "new\n"
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert _leftovers(tmp_path) == []


def test_an_existing_file_is_refused_without_force(tmp_path):
    out = tmp_path / "f.py"
    out.write_text("old\n")
    with pytest.raises(EmitError, match="exists; pass --force"):
        write_atomic(out, "new\n")
    assert out.read_text() == "old\n"


def test_creation_is_exclusive_when_the_name_appears_after_the_check(tmp_path):
    """The race of two runs: the second link finds the first one's file and refuses."""
    tmp, out = tmp_path / ".tmp", tmp_path / "f.py"
    tmp.write_text("second\n")
    out.write_text("first\n")
    with pytest.raises(EmitError, match="written meanwhile"):
        _link_exclusive(tmp, out, b"second\n")
    assert out.read_text() == "first\n"


def test_two_concurrent_writers_never_both_succeed(tmp_path):
    code = (
        "import sys\nfrom adaptkit.core.files import write_atomic\nfrom adaptkit.errors import EmitError\n"
        "try:\n    write_atomic(sys.argv[1], sys.argv[2] * 100000)\nexcept EmitError:\n    sys.exit(2)\n"
    )
    out = tmp_path / "same.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out), f"# {i}\n"], env=env) for i in range(4)]
    codes = sorted(p.wait(timeout=120) for p in procs)
    assert codes == [0, 2, 2, 2]
    assert len(set(out.read_text().splitlines())) == 1  # one writer's text, whole
    assert _leftovers(tmp_path) == []


def test_a_dangling_symlink_is_refused_even_with_force(tmp_path):
    link = tmp_path / "f.py"
    link.symlink_to(tmp_path / "missing.py")
    for force in (False, True):
        with pytest.raises(EmitError, match="dangling symbolic link"):
            write_atomic(link, "x\n", force=force)
    assert link.is_symlink() and not (tmp_path / "missing.py").exists()


def test_force_writes_through_a_symlink_to_a_regular_file(tmp_path):
    real = tmp_path / "real.py"
    real.write_text("old\n")
    link = tmp_path / "f.py"
    link.symlink_to(real)
    write_atomic(link, "new\n", force=True)
    assert link.is_symlink() and real.read_text() == "new\n"


def test_a_fifo_is_never_replaced(tmp_path):
    fifo = tmp_path / "f.py"
    os.mkfifo(fifo)
    with pytest.raises(EmitError, match="not a regular file"):
        write_atomic(fifo, "x\n", force=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_device_is_never_replaced(tmp_path):
    link = tmp_path / "null.py"
    link.symlink_to("/dev/null")
    with pytest.raises(EmitError, match="not a regular file"):
        write_atomic(link, "x\n", force=True)
    with pytest.raises(EmitError, match="not a regular file"):
        check_destination("/dev/null", force=True)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(EmitError, match="is a folder"):
        write_atomic(tmp_path, "x\n", force=True)


def test_a_name_too_long_is_one_line(tmp_path):
    with pytest.raises(EmitError, match="too long"):
        write_atomic(tmp_path / ("a" * 300 + ".py"), "x\n")
    with pytest.raises(EmitError, match="too long"):
        write_atomic(tmp_path / ("a" * 300) / "x.py", "x\n")


def test_a_file_in_the_folder_position_is_named(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(EmitError, match="is a file, not a folder"):
        write_atomic(tmp_path / "afile" / "x.py", "x\n")
    with pytest.raises(EmitError, match="does not exist; create it first"):
        write_atomic(tmp_path / "nofolder" / "x.py", "x\n")


def test_a_name_that_is_not_utf8_is_refused(tmp_path):
    name = os.fsdecode(b"\xff.py")
    with pytest.raises(EmitError, match="not valid UTF-8"):
        write_atomic(tmp_path / name, "x\n")
    with pytest.raises(EmitError, match="not valid UTF-8"):
        write_atomic(tmp_path / "ok.py", f"# {name}\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the check needs a plain user")
def test_an_unwritable_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(EmitError, match="permission denied"):
            write_atomic(folder / "x.py", "x\n")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
        (errno.ENAMETOOLONG, "too long"),
        (errno.EDQUOT, "quota"),
    ],
)
def test_os_errors_become_one_adaptkit_line(code, words):
    with pytest.raises(EmitError, match=words) as info:
        with user_path_errors("/x/y.py", "write", EmitError):
            raise OSError(code, os.strerror(code))
    assert "\n" not in str(info.value) and "/x/y.py" in str(info.value)


def test_a_write_past_the_file_size_limit_leaves_nothing(tmp_path):
    """A real failure mid-write (the file-size limit, as a full disk would): one line, no temp file."""
    code = (
        "import resource, signal, sys\nfrom adaptkit.core.files import write_atomic\nfrom adaptkit.errors import EmitError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\nresource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "try:\n    write_atomic(sys.argv[1], 'x' * 100000)\nexcept EmitError as exc:\n    print(exc); sys.exit(2)\n"
    )
    out = tmp_path / "big.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "cannot write" in done.stdout and len(done.stdout.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_sigterm_inside_the_write_window_removes_the_temp_file(tmp_path, monkeypatch):
    def terminate(fd: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "fsync", terminate)
    with pytest.raises(Terminated):
        write_atomic(tmp_path / "f.py", "x\n")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_bounded_reads_refuse_fifos_and_big_files(tmp_path):
    fifo = tmp_path / "x.py"
    os.mkfifo(fifo)
    with pytest.raises(PortError, match="not a regular file"):
        read_bytes_bounded(fifo, 100, "file", PortError)  # returns at once: the open does not block
    big = tmp_path / "big.py"
    big.write_bytes(b"x" * 200)
    assert read_bytes_bounded(big, 100, "file", PortError) is None
    assert read_bytes_bounded(big, 200, "file", PortError) == b"x" * 200
    link = tmp_path / "link.py"
    link.symlink_to(big)
    with pytest.raises(PortError, match="too many levels of symbolic links"):
        read_bytes_bounded(link, 1000, "file", PortError)


# ---------------------------------------------------------------------------- the CLI, before any probe


@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("a" * 300 + ".py", "too long"),
        ("afile/x.py", "is a file, not a folder"),
        ("fifo.py", "not a regular file"),
        ("dangling.py", "dangling symbolic link"),
        (os.fsdecode(b"\xff.py"), "not valid UTF-8"),
    ],
)
def test_wrap_refuses_a_bad_out_in_one_line(tmp_path, monkeypatch, run_cli, out, words):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("")
    os.mkfifo("fifo.py")
    Path("dangling.py").symlink_to("missing.py")
    before = sorted(os.listdir("."))
    code, stdout, stderr = run_cli("wrap", "sctnet-s", "--target", STOCK, "--out", out, "--force")
    assert code == 2
    assert words in stderr and len(stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(".")) == before


def test_a_home_folder_of_an_unknown_user_is_one_line(run_cli):
    """``~name`` for a user the machine does not know: pathlib raises RuntimeError; we say what is wrong."""
    from adaptkit.core.files import user_path

    with pytest.raises(EmitError, match="no such user's home folder"):
        user_path("~no-such-user-adaptkit/frag.py", "--out")
    code, out, err = run_cli("smoke", "~no-such-user-adaptkit")
    assert code == 2 and out.strip() == "" and err.count("\n") == 1 and "home folder" in err
