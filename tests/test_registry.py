"""The weights registry (oldphoto/registry.py): entries checked against their sha256 when loaded."""

from __future__ import annotations

import pytest
import torch

from oldphoto import registry
from oldphoto.archs import build
from oldphoto.errors import SettingsError, WeightsError
from oldphoto.train.run_files import export_weights

KWARGS = {"channels": [4, 8], "blocks": 1}


@pytest.fixture
def weights(tmp_path, registry_at):
    """A weights folder holding "det-a" (published) and the bytes of other weights of the same arch."""
    torch.manual_seed(0)
    export_weights(build("unet_detector", **KWARGS).state_dict(), "det-a", "unet_detector", KWARGS, {}, tmp_path)
    export_weights(build("unet_detector", **KWARGS).state_dict(), "det-b", "unet_detector", KWARGS, {}, tmp_path)
    return registry_at(tmp_path)


def test_the_weights_loaded_are_the_weights_whose_sha256_was_checked(weights, monkeypatch):
    """A file replaced after its hash was checked (an export with replace running meanwhile) is not loaded."""
    entry = registry.get("det-a")
    want = registry.load_entry(entry).state_dict()
    other = (weights / "det-b.pt").read_bytes()
    load = torch.load

    def replaced_first(f, *args, **kwargs):
        (weights / "det-a.pt").write_bytes(other)  # the file changes between the check and the load
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", replaced_first)
    got = registry.load_entry(entry).state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(WeightsError, match="does not match the manifest"):  # the next load sees the new file
        registry.load_entry(entry)


@pytest.mark.parametrize("text, needle", [("{not json", "JSONDecodeError"), ('{"x": 1}', "KeyError: 'models'"),
                                          ('{"models": {"a": {"arch": "vae"}}}', "KeyError: 'file'")])
def test_a_manifest_that_cannot_be_read_is_a_weights_error(tmp_path, registry_at, text, needle):
    (tmp_path / "MANIFEST.json").write_text(text)
    registry_at(tmp_path)
    with pytest.raises(WeightsError, match=f"MANIFEST.json: not a readable weights manifest .*{needle}"):
        registry.get("a")


@pytest.mark.parametrize("change", ["not a state dict", "other arch_kwargs", "unknown arch"])
def test_weights_that_do_not_load_into_their_entry_are_a_one_line_weights_error(weights, change):
    entry = registry.get("det-a")
    if change == "not a state dict":
        (weights / "det-a.pt").write_bytes(b"truncated")
        entry = registry.WeightsEntry("det-a", entry.arch, entry.arch_kwargs, entry.file,
                                      registry.sha256_file(weights / "det-a.pt"))
    elif change == "other arch_kwargs":
        entry = registry.WeightsEntry("det-a", entry.arch, {**KWARGS, "chroma": True}, entry.file, entry.sha256)
    else:
        entry = registry.WeightsEntry("det-a", "nope", {}, entry.file, entry.sha256)
    with pytest.raises(WeightsError, match=r"det-a\.pt: cannot load model 'det-a' as") as err:
        registry.load_entry(entry)
    assert "\n" not in str(err.value)


def test_split_names_reads_an_exports_as_names_one_way_for_every_caller():
    """The CLI's --as check and the mapping and joint exports share registry.split_names."""
    assert registry.split_names(" map-v9 , vae1-v9,vae2-v9", (1, 3), "usage") == ["map-v9", "vae1-v9", "vae2-v9"]
    assert registry.split_names("map-v9", (1, 3), "usage") == ["map-v9"]
    with pytest.raises(SettingsError, match=r"^names must be X or X,Y,Z, got 'a-v1,b-v1'$"):
        registry.split_names("a-v1,b-v1", (1, 3), "names must be X or X,Y,Z")
    with pytest.raises(SettingsError, match=r"invalid weights name 'B-v1'"):
        registry.split_names("a-v1,B-v1,c-v1", (3,), "usage")
    with pytest.raises(SettingsError, match=r"invalid weights name ''"):
        registry.split_names("a-v1,,c-v1", (3,), "usage")
    with pytest.raises(SettingsError, match=r"^usage, got 'a-v1,b-v1,a-v1' \(a name given twice\)$"):
        registry.split_names("a-v1,b-v1,a-v1", (3,), "usage")
