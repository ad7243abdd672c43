"""Safety: YAML through a SafeLoader only, no pickle, no remote code unless asked, images stay under the root."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from vsp_assert.checks.load import parse_case_file
from vsp_assert.checks.yaml_lines import _Loader, load_yaml
from vsp_assert.errors import CaseError, ModelError

PACKAGE = Path(__file__).resolve().parents[1] / "vsp_assert"
PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _sources() -> list[tuple[Path, ast.Module]]:
    files = sorted(PACKAGE.rglob("*.py")) + sorted(PLUGINS.rglob("*.py"))
    assert len(files) > 20
    return [(f, ast.parse(f.read_text(encoding="utf-8"))) for f in files]


def _calls(tree: ast.Module, owner: str, name: str) -> list[ast.Call]:
    """Calls of ``owner.name(...)`` in a module."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == name and isinstance(node.func.value, ast.Name) and node.func.value.id == owner]


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_yaml_is_read_with_a_safe_loader_subclass_only() -> None:
    assert issubclass(_Loader, yaml.SafeLoader)
    loads = 0
    for path, tree in _sources():
        for unsafe in ("unsafe_load", "full_load", "load_all", "unsafe_load_all", "full_load_all"):
            assert not _calls(tree, "yaml", unsafe), path
        for call in _calls(tree, "yaml", "load"):
            loads += 1
            loader = _keyword(call, "Loader")
            assert isinstance(loader, ast.Name) and loader.id == "_Loader", path
    assert loads == 1  # the one in checks.yaml_lines.load_yaml


def test_a_python_tag_is_a_case_error_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"cases: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(CaseError, match="could not determine a constructor for the tag") as err:
        load_yaml(text, "evil.yaml")
    assert err.value.file == "evil.yaml" and err.value.line == 1
    assert "never executed" in str(err.value)
    assert not marker.exists()


# The one place that may unpickle: ``sae import --allow-pickle`` (a user's explicit opt-in for a published
# checkpoint that stores its trainer's config object), through a restricted unpickler that resolves no function.
OPT_IN_UNPICKLER = "vsp_assert/concepts/importers/_common.py"


def test_no_pickle_and_torch_load_only_with_weights_only() -> None:
    loads = 0
    opt_in = []
    for path, tree in _sources():
        allowed = str(path).replace("\\", "/").endswith(OPT_IN_UNPICKLER)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                forbidden = {"pickle", "cPickle", "dill", "joblib"} & {str(n).split(".")[0] for n in names}
                assert not forbidden or (allowed and forbidden == {"pickle"}), path
        for call in _calls(tree, "torch", "load"):
            loads += 1
            flag = _keyword(call, "weights_only")
            if allowed and isinstance(flag, ast.Constant) and flag.value is False:
                restricted = _keyword(call, "pickle_module")
                assert isinstance(restricted, ast.Name) and restricted.id == "_lenient_pickle", f"{path}:{call.lineno}"
                opt_in.append(call.lineno)
                continue
            assert isinstance(flag, ast.Constant) and flag.value is True, f"{path}:{call.lineno}"
    assert loads >= 2  # the .pt fallback of the SAE loader, the importers' weights-only read
    assert len(opt_in) == 1  # exactly one unpickling load, behind --allow-pickle, with the restricted unpickler


def test_trust_remote_code_is_never_switched_on_by_the_package() -> None:
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), \
                    f"{path}:{node.value.lineno}"
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                        assert not (isinstance(value, ast.Constant) and value.value is True), f"{path}:{key.lineno}"


def test_load_model_passes_trust_remote_code_false_unless_asked(tmp_path: Path, monkeypatch) -> None:
    import transformers

    from vsp_assert.engine.models import load_model

    seen: list[object] = []

    def from_pretrained(name, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    for kwargs, expected in (({}, False), ({"trust_remote_code": True}, True)):
        with pytest.raises(ModelError, match="cannot read the model config"):
            load_model(tmp_path, **kwargs)
        assert seen[-1] is expected


CASE = """
cases:
  - id: outside
    image: ../elsewhere/img.png
    prompt: what color is the square ?
    expect: {answer: red}
"""


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    from PIL import Image

    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "elsewhere" / "img.png")
    (tmp_path / "cases").mkdir()
    path = tmp_path / "cases" / "test_out.yaml"
    path.write_text(CASE)
    return path


def test_images_outside_the_root_are_refused_unless_allowed(outside: Path) -> None:
    root = outside.parent
    with pytest.raises(CaseError, match="image path escapes the cases root") as err:
        parse_case_file(outside, root=root)
    assert err.value.line == 4 and err.value.field == "cases[0].image"
    assert "--vsp-allow-outside-root" in str(err.value)
    allowed = parse_case_file(outside, root=root, allow_outside_root=True)
    assert allowed.cases[0].image == str(root.parent / "elsewhere" / "img.png")


def test_the_plugin_refuses_outside_images_at_collection_unless_the_option(pytester: pytest.Pytester) -> None:
    from PIL import Image

    (pytester.path / "elsewhere").mkdir()
    Image.new("RGB", (16, 16)).save(pytester.path / "elsewhere" / "img.png")
    (pytester.path / "cases").mkdir()
    (pytester.path / "cases" / "test_out.yaml").write_text(CASE)
    pytester.makeini("[pytest]\n")
    # the rootdir is pytester.path, so point the root at the cases folder with --rootdir
    refused = pytester.runpytest("--collect-only", "-q", f"--rootdir={pytester.path / 'cases'}", "cases")
    assert refused.ret == 2
    assert "test_out.yaml:4: field 'cases[0].image': image path escapes the cases root" in refused.stdout.str()
    allowed = pytester.runpytest("--collect-only", "-q", f"--rootdir={pytester.path / 'cases'}",
                                 "--vsp-allow-outside-root", "cases")
    assert allowed.ret == 0
    assert "test_out.yaml::outside" in allowed.stdout.str()
