#!/usr/bin/env python3
"""Derive inferwatt's built-in grid-intensity tables (core/data/) from the reference data
in shared/data/grid-intensity/, so the derivation is reproducible and reviewable.

    python3 tools/build-factor-tables.py            # rewrite core/data/grid-intensity-*.json
    python3 tools/build-factor-tables.py --check    # exit 1 if core/data/ is out of date

Inputs (read only):
  <src>/electricity-maps-yearly-<YEAR>.json  Electricity Maps yearly zones (ODbL 1.0)
  <src>/ember-average-intensities.json       Ember yearly countries and regions (CC BY-SA 4.0)
  <iso>                                      ISO 3166-1 codes (Debian package iso-codes),
                                             used only to add alpha-2 codes to Ember rows
Outputs: core/data/grid-intensity-electricity-maps.json, core/data/grid-intensity-ember.json.
Values are copied unchanged (no rounding, no gap filling); only the shape changes.
Standard library only.
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = ROOT.parent / "shared" / "data" / "grid-intensity"
DEFAULT_ISO = Path("/usr/share/iso-codes/json/iso_3166-1.json")
DEFAULT_OUT = ROOT / "core" / "data"
UPSTREAM = "thegreenwebfoundation/co2.js at commit 27cbe8328aea"

# Codes the ISO list does not carry but both sources use (user-assigned, widely used).
EXTRA_ALPHA3_TO_ALPHA2 = {"XKX": "XK"}  # Kosovo


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def build_electricity_maps(src):
    files = sorted(src.glob("electricity-maps-yearly-*.json"))
    if not files:
        sys.exit(f"no electricity-maps-yearly-YEAR.json in '{src}'; pass --src")
    zones = {}
    datasets = {}
    for path in files:
        year = int(re.fullmatch(r"electricity-maps-yearly-(\d{4})\.json", path.name).group(1))
        datasets[str(year)] = f"Electricity Maps yearly {year} (ODbL 1.0)"
        for zone, row in load_json(path).items():
            ci = row["carbonIntensity"]
            if ci["unit"] != "gCO2eq/kWh":
                sys.exit(f"{path.name}: zone '{zone}' has unit '{ci['unit']}', expected gCO2eq/kWh")
            entry = zones.setdefault(zone, {"name": row["zone"]["zoneName"], "g_per_kwh": {}})
            entry["g_per_kwh"][str(year)] = ci["value"]
    return {
        "source": "Electricity Maps",
        "licence": "ODbL 1.0",
        "licence_url": "https://opendatacommons.org/licenses/odbl/1-0/",
        "attribution": "Contains data from Electricity Maps (https://www.electricitymaps.com), "
        "made available under the Open Database License (ODbL) 1.0.",
        "upstream": f"{UPSTREAM}, data/output/electricity-maps/yearly_<YEAR>.json",
        "quantity": "yearly average carbon intensity of electricity (carbonIntensity as published)",
        "unit": "gCO2eq/kWh",
        "datasets": datasets,
        "zones": {k: zones[k] for k in sorted(zones)},
    }


def build_ember(src, iso_path):
    iso = load_json(iso_path)["3166-1"]
    alpha3_to_alpha2 = {c["alpha_3"]: c["alpha_2"] for c in iso}
    alpha3_to_alpha2.update(EXTRA_ALPHA3_TO_ALPHA2)
    rows = load_json(src / "ember-average-intensities.json")
    entries = {}
    years = set()
    for key, row in rows.items():
        code = row["country_code"]
        if code and code != key:
            sys.exit(f"ember: key '{key}' differs from country_code '{code}'")
        year = int(row["year"])
        years.add(year)
        entries[key] = {
            "name": row["country_or_region"],
            # null for regions and aggregates ("World", "EU", "G20", ...)
            "alpha2": alpha3_to_alpha2.get(code) if code else None,
            "g_per_kwh": {str(year): row["emissions_intensity_gco2_per_kwh"]},
        }
        if code and entries[key]["alpha2"] is None:
            sys.exit(f"ember: no ISO 3166-1 alpha-2 code for '{code}'; add it to EXTRA_ALPHA3_TO_ALPHA2")
    return {
        "source": "Ember",
        "licence": "CC BY-SA 4.0",
        "licence_url": "https://creativecommons.org/licenses/by-sa/4.0/",
        "attribution": "Ember, yearly electricity data (https://ember-energy.org), "
        "licensed under CC BY-SA 4.0; reshaped by inferwatt (tools/build-factor-tables.py).",
        "upstream": f"{UPSTREAM}, data/output/average-intensities.json",
        "quantity": "yearly average emissions intensity of electricity generation (as published)",
        "unit": "gCO2e/kWh",
        "datasets": {str(y): f"Ember yearly {y} (CC BY-SA 4.0)" for y in sorted(years)},
        "countries": {k: entries[k] for k in sorted(entries)},
    }


def render(table):
    """Header keys one per line, then one zone or country per line: small diffs on regeneration."""
    lines = ["{"]
    items = list(table.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        if isinstance(value, dict) and key in ("zones", "countries"):
            lines.append(f" {json.dumps(key)}: {{")
            rows = list(value.items())
            for j, (name, row) in enumerate(rows):
                row_comma = "," if j + 1 < len(rows) else ""
                lines.append(f"  {json.dumps(name, ensure_ascii=False)}: {json.dumps(row, ensure_ascii=False)}{row_comma}")
            lines.append(f" }}{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="shared/data/grid-intensity folder")
    ap.add_argument("--iso", type=Path, default=DEFAULT_ISO, help="iso-codes iso_3166-1.json")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (core/data)")
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on drift")
    args = ap.parse_args()

    outputs = {
        "grid-intensity-electricity-maps.json": render(build_electricity_maps(args.src)),
        "grid-intensity-ember.json": render(build_ember(args.src, args.iso)),
    }
    drift = False
    for name, text in outputs.items():
        path = args.out / name
        if args.check:
            current = path.read_text(encoding="utf-8") if path.exists() else None
            if current != text:
                print(f"{path} is out of date: run python3 tools/build-factor-tables.py")
                drift = True
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path} ({len(text)} bytes)")
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())
