"""Cache-key fingerprints: stable, order-independent for dicts, equal to the documented construction."""

import hashlib
import json
import os

from calmix.fingerprint import digest, file_stamp, seed_from


def test_digest_is_sha256_of_sorted_json():
    obj = {"b": [1, 2], "a": {"y": 1.5, "x": None}}
    expected = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
    assert digest(obj, length=64) == expected
    assert digest(obj) == expected[:20]
    assert digest({"a": {"x": None, "y": 1.5}, "b": [1, 2]}) == digest(obj)
    assert digest({"a": 1}) != digest({"a": 2})


def test_digest_of_text_hashes_the_text_itself():
    assert digest("abc", length=64) == hashlib.sha256(b"abc").hexdigest()


def test_seed_from_is_a_stable_63_bit_integer():
    raw = hashlib.sha256(b"7|c4").digest()[:8]
    assert seed_from(7, "c4") == int.from_bytes(raw, "little") & (2**63 - 1)
    assert 0 <= seed_from(0, "x") < 2**63
    assert seed_from(0, "a") != seed_from(0, "b")


def test_file_stamp_changes_with_content_size_or_mtime(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"1234")
    first = file_stamp(f)
    assert file_stamp(f) == first
    f.write_bytes(b"12345")
    assert file_stamp(f) != first
    os.utime(f, (1, 1))
    assert len(file_stamp(f)) == 12


def test_digest_bytes_hashes_the_concatenation():
    from calmix.fingerprint import digest_bytes

    assert digest_bytes([b"ab", b"c"], 64) == hashlib.sha256(b"abc").hexdigest()
    assert digest_bytes(iter([b"abc"])) == hashlib.sha256(b"abc").hexdigest()[:16]
