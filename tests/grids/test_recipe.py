
import pytest

from gridtune.errors import SpecError
from gridtune.grids.recipe import load_recipe, recipe_for


def write(tmp_path, text):
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


def test_every_shipped_recipe_loads():
    from gridtune.grids.cases import CASE_NAMES
    from gridtune.specs import shipped_names

    assert set(CASE_NAMES) <= set(shipped_names("datasets"))
    for name in CASE_NAMES:
        r = recipe_for(name)
        assert r.case == name and r.loads.scale == "auto"


def test_samples_override_keeps_cache_key(tmp_path):
    p = write(tmp_path, 'case = "case9"\nsamples = 100\n[loads]\nscale = [0.8, 1.2]\n')
    a, b = load_recipe(p), load_recipe(p, samples=7)
    assert b.samples == 7 and a.cache_key() == b.cache_key()
    c = load_recipe(write(tmp_path, 'case = "case9"\nsamples = 100\nseed = 1\n[loads]\nscale = [0.8, 1.2]\n'))
    assert c.cache_key() != a.cache_key()


def test_keys_added_later_keep_old_cache_entries_at_their_old_behaviour(tmp_path):
    """`[labels] sdp = true` is what every dataset did before the key existed: same key as a recipe
    hashed without it (so old caches stay valid); `sdp = false` labels differently: a new key.
    `cycles` and `solver` default to the newer behaviour (fewer unknowns, Ipopt first): only
    `cycles = false` with `solver = "pips"` keeps the old key. `obbt` is off by default and
    off keeps the key."""
    import hashlib
    import json

    base = 'case = "case9"\nsamples = 10\n[loads]\nscale = [0.8, 1.2]\n'
    default = load_recipe(write(tmp_path, base))
    explicit = load_recipe(write(tmp_path, base + "[labels]\nsdp = true\n"))
    off = load_recipe(write(tmp_path, base + "[labels]\nsdp = false\n"))
    assert default.cache_key() == explicit.cache_key() != off.cache_key()
    ipopt = load_recipe(write(tmp_path, base + '[labels]\nsolver = "ipopt"\n'))
    pips = load_recipe(write(tmp_path, base + '[labels]\nsolver = "pips"\n'))
    assert ipopt.cache_key() == default.cache_key() != pips.cache_key()  # Ipopt first by default
    old_behaviour = load_recipe(write(tmp_path, base + '[labels]\ncycles = false\nsolver = "pips"\n'))
    assert old_behaviour.cache_key() != pips.cache_key()  # cycle certificates change labels
    obbt = load_recipe(write(tmp_path, base + "[labels]\nobbt = true\n"))
    obbt_off = load_recipe(write(tmp_path, base + "[labels]\nobbt = false\n"))
    assert obbt_off.cache_key() == default.cache_key() != obbt.cache_key()
    before = old_behaviour.to_dict()
    before.pop("samples")
    for key in ("sdp", "solver", "cycles", "obbt"):  # the recipe as hashed before these keys existed
        del before["labels"][key]
    del before["loads"]["calibration_solver"]
    assert old_behaviour.cache_key() == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("text, message", [
    ('case = "case9"\nsampels = 3\n', r"r.toml: unknown key `sampels`; valid keys: .*`samples`"),
    ('case = "case9"\n[loads]\nscale = [1.5, 0.5]\n', r"range `\[1.5, 0.5\]` must satisfy 0 < low < high"),
    ('case = "case9"\n[loads]\nscale = "big"\n', r"expected \"auto\" or \[low, high\]"),
    ('case = "case9"\n[topology]\nn_minus_1 = 1.5\n', r"`n_minus_1` = `1.5` must be a share in \[0, 1\]"),
    ('case = "case9"\n[limits]\nrating_factor = 0.9\n', r"`rating_factor` = `0.9` must be above 1"),
    ('case = "case9"\n[loads]\nwhat = 1\n', r"r.toml \[loads\]: unknown key `what`"),
    ('samples = 3\n', r"missing required key `case`"),
])
def test_recipe_errors_name_file_and_key(tmp_path, text, message):
    with pytest.raises(SpecError, match=message):
        load_recipe(write(tmp_path, text))


def test_negative_samples_override(tmp_path):
    p = write(tmp_path, 'case = "case9"\n')
    with pytest.raises(SpecError, match=r"--samples must be at least 1, got `0`"):
        load_recipe(p, samples=0)


def test_shipped_variant_recipe_loads_by_name():
    """`case30_rerated` (the transfer benchmark's re-rated case30 source) resolves by name."""
    r = recipe_for("case30_rerated")
    assert r.case == "case30" and r.limits.rating_factor == 1.3 and r.limits.min_rating_mva == 5.0
    assert r.cache_key() != recipe_for("case30").cache_key()
