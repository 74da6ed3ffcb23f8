"""Study folder: lock, saved config, status of a folder without a study."""

from __future__ import annotations

import shutil

import pytest

from calmix.cli import main
from calmix.errors import CalmixError
from calmix.study.folder import CONFIG_FILE, is_locked, load_study_config, study_lock, study_status


def test_status_of_a_folder_without_study(tmp_path):
    assert main(["study", "status", str(tmp_path)]) == 2
    shutil.rmtree(tmp_path)


def test_lock_is_exclusive_and_seen_by_is_locked(tmp_path):
    assert not is_locked(tmp_path)
    with study_lock(tmp_path):
        assert is_locked(tmp_path)
        with pytest.raises(CalmixError, match="another `calmix study run` is using"):
            with study_lock(tmp_path):
                pass
    assert not is_locked(tmp_path)


def test_saved_config_is_read_back_and_bad_toml_is_a_clear_error(tmp_path, fake_study):
    fx = fake_study(tmp_path / "s")
    assert load_study_config(tmp_path / "s") == fx["cfg"]
    (tmp_path / "s" / CONFIG_FILE).write_text("[study\nname=1")
    with pytest.raises(CalmixError, match="is not valid TOML"):
        load_study_config(tmp_path / "s")
    with pytest.raises(CalmixError, match="holds no study"):
        load_study_config(tmp_path / "none")


def test_status_counts_of_the_fake_study(tmp_path, fake_study):
    fx = fake_study(tmp_path / "s")
    st = study_status(tmp_path / "s")
    assert st["total"] == len(fx["cells"]) == 18 and st["running_now"] is False
    assert st["counts"] == {"done": 17, "failed": 1, "pending": 0, "running": 0}
    assert st["failed"] == [{"cell": fx["failed"].name, "error": "RuntimeError: boom", "attempts": 1}]
    assert st["mean_cell_seconds"] == 1.0
