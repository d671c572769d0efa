"""The register of reviewed equivalent mutants stays a register: one file per configured module,
every entry naming a mutant of that module, its changed lines and a reason, none twice."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGISTER = ROOT / "deploy" / "dev" / "equivalent_mutants"


def test_every_entry_names_a_mutant_of_its_module_with_its_change_and_why():
    modules = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["only_mutate"]
    dotted = {m.removesuffix(".py").replace("/", ".") for m in modules}
    seen = set()
    files = sorted(REGISTER.glob("*.toml"))
    assert files, "no register files"
    for path in files:
        module = path.name.removesuffix(".toml")
        assert module in dotted, f"{path.name}: not a module of [tool.mutmut] only_mutate"
        for entry in tomllib.loads(path.read_text())["equivalent"]:
            assert set(entry) == {"mutant", "change", "why"}, f"{path.name}: {entry.get('mutant')}"
            name = entry["mutant"]
            assert name.startswith(module + ".x") and "__mutmut_" in name, name
            assert name not in seen, f"{name} listed twice"
            seen.add(name)
            assert entry["change"] and all(line[:1] in "+-" for line in entry["change"]), name
            assert len(entry["why"].split()) >= 5, f"{name}: say why"
