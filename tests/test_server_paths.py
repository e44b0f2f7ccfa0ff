"""Server paths from the browser: on only when allowed, confined to the allowed roots, one message when refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import server_paths as sp
from app.server_paths import CHECKPOINT_REFUSED, FOLDER_REFUSED, PathRefused

PROJECT = Path("/srv/fapn")


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    """root/ (allowed) and outside/ (not), with files, folders and symlinks that point out of the root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "models").mkdir(parents=True)
    (root / "dir.pth").mkdir()
    (root / "dataset" / "images").mkdir(parents=True)
    (outside / "dataset" / "images").mkdir(parents=True)
    (root / "models" / "good.safetensors").write_bytes(b"weights")
    (root / "notes.txt").write_text("not a checkpoint")
    (outside / "secret.pth").write_bytes(b"secret weights")
    (outside / "secret.txt").write_text("secret")
    (root / "escape.pth").symlink_to(outside / "secret.pth")
    (root / "linkdir").symlink_to(outside)
    (root / "alias.safetensors").symlink_to(root / "notes.txt")
    (root / "loop.pth").symlink_to(root / "loop.pth")
    return {"root": root, "outside": outside, "home": outside}


def _policy(root: Path, **kw) -> sp.ServerPaths:
    return sp.ServerPaths(True, "test", "127.0.0.1", True, (root,), (root,), **kw)


def test_paths_under_the_root_resolve(tree):
    policy, root = _policy(tree["root"]), tree["root"]
    good = (root / "models" / "good.safetensors").resolve()
    assert policy.checkpoint(str(root / "models" / "good.safetensors")) == good
    assert policy.checkpoint("models/good.safetensors") == good  # relative to the root
    assert policy.checkpoint(f"{root}/models/../models/good.safetensors") == good  # .. that stays inside
    assert policy.dataset_folder("dataset") == (root / "dataset").resolve()
    assert policy.dataset_folder(str(root)) == root.resolve()  # a data root can itself be the dataset


@pytest.mark.parametrize("text", [
    "../outside/secret.pth",                 # relative traversal
    "models/../../outside/secret.pth",
    "{outside}/secret.pth",                  # absolute path outside, checkpoint extension
    "{root}/../outside/secret.pth",          # absolute path that climbs out
    "/etc/shadow.pth",                       # does not exist anywhere
    "escape.pth",                            # symlink inside the root pointing out of it
    "linkdir/secret.pth",                    # through a symlinked folder
    "~/secret.pth",                          # home folder (outside the root here)
    "missing.safetensors",                   # missing inside the root
    "dir.pth",                               # a folder, not a file
    "alias.safetensors",                     # symlink to a non-checkpoint file
    "loop.pth",                              # symlink loop
    "~root/x.pth",                           # another user's home
    "~nosuchuser/x.pth",
])
def test_refused_checkpoints_get_one_message(tree, monkeypatch, text):
    monkeypatch.setenv("HOME", str(tree["home"]))
    text = text.format(root=tree["root"], outside=tree["outside"])
    with pytest.raises(PathRefused) as e:
        _policy(tree["root"]).checkpoint(text)
    assert str(e.value) == CHECKPOINT_REFUSED


@pytest.mark.parametrize("text", ["../outside/dataset", "{outside}/dataset", "linkdir/dataset", "linkdir", "~",
                                  "~/dataset", "missing", "notes.txt", "{root}/../outside", "/"])
def test_refused_dataset_folders_get_one_message(tree, monkeypatch, text):
    monkeypatch.setenv("HOME", str(tree["home"]))
    with pytest.raises(PathRefused) as e:
        _policy(tree["root"]).dataset_folder(text.format(root=tree["root"], outside=tree["outside"]))
    assert str(e.value) == FOLDER_REFUSED


def test_paths_outside_the_roots_are_not_even_looked_up(tree, monkeypatch):
    looked_up: list[Path] = []
    real = sp._real

    def spy(path: Path):
        looked_up.append(path)
        return real(path)

    monkeypatch.setattr(sp, "_real", spy)
    for text in (f"{tree['outside']}/secret.pth", "../outside/secret.pth", "/etc/shadow.pth"):
        with pytest.raises(PathRefused):
            _policy(tree["root"]).checkpoint(text)
    outside = tree["outside"].resolve()
    assert not [p for p in looked_up if Path(os.path.normpath(p)).is_relative_to(outside)
                or str(p).startswith("/etc")], looked_up


def test_wrong_extension_is_judged_from_the_text_alone(tree):
    policy = _policy(tree["root"])
    messages = set()
    for text in ("notes.txt", "missing.txt", f"{tree['outside']}/secret.txt", "models", ""):
        with pytest.raises(PathRefused) as e:
            policy.checkpoint(text)
        messages.add(str(e.value).split(":")[0])
    assert messages == {"unsupported checkpoint type '.txt'", "unsupported checkpoint type ''"}


def test_a_root_reached_through_a_symlink_and_several_roots(tmp_path):
    real_root, other = tmp_path / "real", tmp_path / "other"
    (real_root / "m").mkdir(parents=True)
    other.mkdir()
    (real_root / "m" / "a.pt").write_bytes(b"x")
    (other / "b.pkl").write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(real_root)
    policy = sp.ServerPaths(True, "test", None, False, (link, other), ())
    assert policy.checkpoint(f"{link}/m/a.pt") == (real_root / "m" / "a.pt").resolve()
    assert policy.checkpoint(f"{real_root}/m/a.pt") == (real_root / "m" / "a.pt").resolve()
    assert policy.checkpoint("b.pkl") == (other / "b.pkl").resolve()  # relative: tried under each root
    with pytest.raises(PathRefused, match="dataset folder not allowed"):
        policy.dataset_folder("m")  # no data roots: nothing is allowed


@pytest.mark.parametrize("address,private", [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True), ("127.0.0.2", True),
    (None, False), ("", False), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("myhost", False),
    ("unix:///tmp/s.sock", False),
])
def test_loopback_addresses(address, private):
    assert sp.is_loopback(address) is private


def test_loopback_server_allows_paths_under_the_working_folder(tmp_path):
    p = sp.from_settings({}, "127.0.0.1", PROJECT, tmp_path)
    assert p.enabled and p.private
    assert p.model_roots == p.data_roots == (tmp_path,)
    assert "loopback" in p.summary() and str(tmp_path) in p.summary()


@pytest.mark.parametrize("address", [None, "", "0.0.0.0", "10.0.0.4"])
def test_shared_server_has_server_paths_off_by_default(tmp_path, address):
    p = sp.from_settings({"FAPN_ALLOW_LOCAL_PATHS": "auto"} if address == "" else {}, address, PROJECT, tmp_path)
    assert not p.enabled and not p.private
    assert p.summary().startswith("Server paths: off") and "FAPN_ALLOW_LOCAL_PATHS=1" in p.summary()
    with pytest.raises(PathRefused, match="server paths are off on this server"):
        p.checkpoint(str(tmp_path / "x.safetensors"))
    with pytest.raises(PathRefused, match="server paths are off on this server"):
        p.dataset_folder(str(tmp_path))


def test_shared_server_with_paths_allowed_uses_the_project_folders(tmp_path):
    p = sp.from_settings({"FAPN_ALLOW_LOCAL_PATHS": "1"}, "0.0.0.0", PROJECT, tmp_path)
    assert p.enabled and not p.private
    assert p.model_roots == (PROJECT / "assets",) and p.data_roots == (PROJECT / "data",)


def test_configured_roots_replace_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    env = {"FAPN_ALLOW_LOCAL_PATHS": "1", "FAPN_MODEL_ROOTS": os.pathsep.join(["ckpt", "~/models", "", "ckpt"]),
           "FAPN_DATA_ROOTS": "/data/sets/../cityscapes"}
    p = sp.from_settings(env, "0.0.0.0", PROJECT, tmp_path)
    assert p.model_roots == (tmp_path / "ckpt", tmp_path / "home" / "models")
    assert p.data_roots == (Path("/data/cityscapes"),)
    empty = sp.from_settings({"FAPN_MODEL_ROOTS": os.pathsep}, "127.0.0.1", PROJECT, tmp_path)
    assert empty.model_roots == () and "(no model roots)" in empty.summary()


@pytest.mark.parametrize("value,enabled", [("0", False), ("1", True), ("auto", True), ("yes", False),
                                           ("true", False)])
def test_the_switch_on_a_loopback_server(tmp_path, value, enabled):
    p = sp.from_settings({"FAPN_ALLOW_LOCAL_PATHS": value}, "127.0.0.1", PROJECT, tmp_path)
    assert p.enabled is enabled
    if value in ("yes", "true"):
        assert f"FAPN_ALLOW_LOCAL_PATHS='{value}' is not 0, 1 or auto" in p.summary()


def test_a_root_of_a_user_that_does_not_exist_is_refused_not_raised(tmp_path):
    """``~nosuchuser/models`` cannot be expanded: that root is refused with its reason, the others still apply."""
    env = {"FAPN_MODEL_ROOTS": os.pathsep.join(["~nosuchuser_fapn/models", str(tmp_path)]),
           "FAPN_DATA_ROOTS": "~nosuchuser_fapn/data"}
    p = sp.from_settings(env, "127.0.0.1", PROJECT, tmp_path)
    assert p.model_roots == (tmp_path,) and p.data_roots == ()
    assert p.refused_roots == (
        "FAPN_MODEL_ROOTS `~nosuchuser_fapn/models`: its `~user` names no user on this server",
        "FAPN_DATA_ROOTS `~nosuchuser_fapn/data`: its `~user` names no user on this server")
    assert p.refused_summary().startswith("Refused root(s), not used: FAPN_MODEL_ROOTS `~nosuchuser_fapn/models`")
    assert sp.from_settings({}, "127.0.0.1", PROJECT, tmp_path).refused_summary() == ""
