import pytest

from visitshare.contracts import geography


def test_all_62_tokyo_municipalities_with_jis_codes():
    ms = geography.municipalities()
    assert len(ms) == 62
    assert min(ms) == "13101" and max(ms) == "13421"
    assert sum(m.is_special_ward for m in ms.values()) == 23
    assert ms["13104"].name == "新宿区" and ms["13123"].name == "江戸川区"


def test_towns_are_japan_post_town_names_without_building_floor_rows():
    shinjuku = geography.municipality("13104")
    assert "西新宿" in shinjuku.towns and "歌舞伎町" in shinjuku.towns
    # Japan Post lists skyscrapers floor by floor; those rows are not towns.
    assert not any("アイランドタワー" in t for t in shinjuku.towns)
    assert len(shinjuku.towns) == len(set(shinjuku.towns))
    assert "以下に掲載がない場合" not in {
        t for m in geography.municipalities().values() for t in m.towns
    }


def test_a_village_without_towns_is_its_own_town():
    toshima_village = geography.municipality("13362")
    assert toshima_village.towns == ("利島村",)
    assert geography.is_valid_town("13362", "利島村")


def test_town_membership_is_per_municipality():
    assert geography.is_valid_town("13104", "西新宿")
    assert not geography.is_valid_town("13112", "西新宿")  # a Shinjuku town, not Setagaya's
    assert not geography.is_valid_town("13999", "西新宿")


@pytest.mark.parametrize("name", ["13104", "新宿区", "shinjuku", " Shinjuku "])
def test_resolve_accepts_codes_japanese_and_romanized_names(name):
    assert [m.code for m in geography.resolve(name)] == ["13104"]


def test_resolve_groups_and_deduplicates():
    assert len(geography.resolve("wards")) == 23
    assert len(geography.resolve("all")) == 62
    assert [m.code for m in geography.resolve("13104,shinjuku,新宿区")] == ["13104"]


def test_resolve_rejects_unknown_names_with_help():
    with pytest.raises(ValueError, match="unknown municipality 'atlantis'"):
        geography.resolve("atlantis")
    with pytest.raises(KeyError, match="not a Tokyo municipality"):
        geography.municipality("27100")
