"""Security audit as tests: secrets only through environment variables, safe model loading, SQL built from
parameters or quoted identifiers only.  Each scan reads the package source, so a new violation fails here."""

from __future__ import annotations

import ast
import functools
import re

import dagster as dg
import pytest
import yaml

from ecom_pipeline.config import REPO_ROOT, Settings

PACKAGE = REPO_ROOT / "ecom_pipeline"
DOCKER = REPO_ROOT / "docker"
SQL_METHODS = {"execute", "executemany", "sql", "query"}
# Calls that make an interpolated piece safe: identifiers quoted ("a""b"), literals quoted ('it''s').
QUOTING_HELPERS = {"quote_ident", "qi", "_lit", "_ts_lit", "_sql_str", "mask_sql", "_sql_text", "_literal"}
CONSTANT = re.compile(r"[A-Z][A-Z0-9_]*")  # module constants: written in code, never from data

# Interpolations that are neither a quoting helper nor a constant, reviewed one by one.  None of them
# carries a value from data, a mapping file, a partition key or a file name: user-controlled values reach
# SQL only as ``?`` parameters (inbox: day/file; staging: table names via _lit; loader: load ids).
REVIEWED_INTERPOLATIONS: dict[str, tuple[set[str], str]] = {
    "cleaning/staging_upsert.py": (
        {
            "' UNION ALL '.join(parts)",
            "', '.join((f's.{qi(c)}' for c in all_cols))",
            "', '.join((f'{qi(c)} = s.{qi(c)}' for c in all_cols))",
            "'VIEW' if kind == 'VIEW' else 'TABLE'",
            "changed",
            "col_list",
            "key_json",
            "keys",
            "live",
            "on",
            "prev_json",
            "quarantine",
            "same",
            "schema",
            "scratch",
            "scratch_raw",
        },
        "MERGE/change-log SQL assembled from canonical.TABLES names through qi() and the module's schema "
        "constants; partition keys, load ids and table names as ? parameters",
    ),
    "sources/fast_csv.py": (
        {
            "', '.join(exprs)",
            "_read_csv_sql(f.path, f.options, n_cols, rejects, settings)",
            "int(settings.threads)",
            "int(threads)",
            "cols_sql",
            "mine",
            "rejects",
            "target",
        },
        "target: schema.table through quote_ident() by the loader; rejects: a name from the process id; file "
        "paths, labels, delimiters and constants as literals through _sql_text() (quotes doubled); buffer "
        "sizes as int()",
    ),
    "ml/encoders/quarantine.py": (
        {"embeddings", "quarantine", "uri_column"},
        "table and column names are module constants of the calling asset (embeddings.py, video.py)",
    ),
    "distributed/services.py": ({"db"}, "database names of the throwaway test cluster, a code constant"),
    "cleaning/staging.py": (
        {
            "', '.join(('s.' + k for k in keys))",
            "_lit(load_id) if load_id else 'NULL'",
            "_tz_map_sql(spec, raw_cols, raw_rel, hints)",
            "_pseudonym_map_sql(spec.columns[i], raw_rel)",
            "building_rel",
            "cols",
            "final_rel",
            "helper",
            "key_list",
            "load_col",
            "on",
            "original",
            "quarantine_rel",
            "raw_rel",
            "sql",
            "work_sql",
            "row_hash",
            "create",
        },
        "relations and column lists assembled from qi()-quoted canonical names (canonical.TABLES), values "
        "through _lit(); the source's timezone hint is a literal via _lit inside _tz_map_sql; `create` a "
        "fixed CREATE [TEMP] TABLE prefix over building_rel",
    ),
    "loading.py": (
        {"_create_raw_table_sql(loading, table)", "final", "insert_cols", "loading", "select", "scratch"},
        "raw table names and columns from canonical.TABLES, each through quote_ident()",
    ),
    "quality.py": (
        {"' OR '.join(conds)", "_staged(fk.parent)", "_staged(table)", "cond", "key", "not_null", "on"},
        "check SQL built from canonical table/column names through quote_ident()",
    ),
    "warehouse/tables.py": (
        {"marks", "qualified", "schema", "sel", "struct", "sql"},
        "schema.table and column names passed by asset code as constants (never from data); `sql`: "
        "fetch_frame_shared_strings forwards its caller's statement unchanged (checked in the caller)",
    ),
    "resources/io_manager.py": ({"qualified"}, "schema.table from the asset key (code), not from data"),
    "resources/warehouse.py": ({"schema"}, "the fixed LAYER_SCHEMAS tuple"),
    "ml/encoders/store.py": (
        {"extra", "key", "names", "schema", "table", "where"},
        "embedding-store table/key names are constants of the calling asset; `where` is built in the module",
    ),
    "assets/embeddings.py": (
        {"sql", "table"},
        "table names are module constants; `sql` is a fixed statement",
    ),
    "assets/registry_report.py": ({"table"}, "literal report table names chosen in the module"),
    "assets/reviews.py": (
        {"'c.state' if state else 'NULL::VARCHAR'", "sentiment_aggregate_sql(level, have)", "state", "table"},
        "fixed SQL fragments chosen by booleans and level names from a closed set in ml/text/aggregates.py",
    ),
    "automation/retraining.py": ({"_QUERY"}, "a module-level constant query"),
    "assets/recommender.py": (
        {"sql", "t"},
        "t: STAGING_TABLES constants; sql: interactions_query() over them, "
        "event weights and statuses as ? parameters",
    ),
    "ml/recsys/interactions.py": (
        {"sql", "item", "relation", "extra"},
        "interactions_query() over STAGING_TABLES constants or the names it "
        "registers its own DataFrames under; values as ? parameters; aggregate_in_duckdb: item is the item "
        "column inside double quotes (quotes doubled), relation the caller's table or registered frame "
        "name, extra the caller's fixed WHERE fragment (incremental.interactions: customers via a "
        "registered frame)",
    ),
    "ml/recsys/data.py": (
        {
            "_ROWS",
            "_USERS",
            "_ITEMS",
            "columns",
            "picked",
            "relation",
            "table",
            "key",
            "index",
            "order",
            "pos",
        },
        "_ROWS/_USERS/_ITEMS/key/index/pos: module constants (scratch TEMP tables and their columns, "
        "_item<k>, rowid or _pos); picked/columns: each item column inside double quotes (quotes doubled) AS "
        "_item<k>, and fixed casts; relation and order "
        "(ORDER BY + order_by): the "
        "caller's table name or query and its column list (code: incremental.interactions.ORDER); event "
        "types as a ? parameter",
    ),
    "cleaning/privacy.py": (
        {"pseudonym_macro_sql(key)"},
        "hex of the HMAC pads: [0-9a-f] only, no quote can occur",
    ),
    "demo.py": ({"table"}, "canonical.TABLE_ORDER names inside double quotes"),
    "pii_scan.py": (
        {"p", "values"},
        "p: a PATTERNS regex with quotes doubled; values: built with quote_ident()",
    ),
    "api/data.py": (
        {"sql or f'SELECT * FROM {table}'", "table"},
        "snapshot table names are module constants of the app; `sql` a fixed statement of the module",
    ),
    "assets/federated.py": (
        {"state", "join"},
        "two fixed SQL fragments chosen by whether staging.customers exists",
    ),
    "geography.py": (
        {"np.c_[np.cos(la) * np.cos(ln), np.cos(la) * np.sin(ln), np.sin(la)]"},
        "not SQL: a KD-tree query of unit vectors",
    ),
    "ml/serving_gate.py": (
        {
            "', '.join(DECISION_COLUMNS)",
            "table",
            "scope_sql",
            "model_col",
            "task",
            "_judging_decisions_sql(table, task)",
        },
        (
            "DECISION_COLUMNS, GATED_TABLES (table, task, model column, scope) and OVERRIDING_TASKS are "
            "module constants"
        ),
    ),
    "resources/model_metrics.py": (
        {"column", "sql_type", "', '.join(COLUMNS)"},
        "INTERVAL_COLUMNS and COLUMNS are module constants",
    ),
    "distributed/local.py": ({"schema"}, "LAYER_SCHEMAS constants of the warehouse layer"),
    "warehouse/lake.py": (
        {"query", "options"},
        "`query`: the connection wrapper forwards its caller's statement unchanged (the caller's "
        "own interpolations are checked in the caller's module); `options`: DATA_PATH through "
        "_literal() plus a fixed READ_ONLY",
    ),
    "incremental/changes.py": (
        {"sql", "t"},
        "t: ACTIVITY staging table names (module constants); sql: the "
        "union of ACTIVITY statements; load ids and times as ? parameters",
    ),
    "incremental/interactions.py": (
        {"sql", "t", "', '.join(INTERACTION_COLUMNS)", "theirs"},
        "t: STAGING_TABLES constants; sql: interactions_query() over them with values as ? parameters; "
        "INTERACTION_COLUMNS a module constant; theirs: _of_customers()'s fixed condition (the customers "
        "as a registered frame)",
    ),
    "incremental/profiles.py": (
        {"' UNION ALL '.join(parts)", "marks", "sel", "t", "cond", "table"},
        "t/table: STAGING_COLUMNS and DATED keys (module constants); sel: their column names, or NULL for a "
        "missing one; cond and parts: module-level WHERE fragments; marks: '?' placeholders; values as ? "
        "parameters",
    ),
    "incremental/serving.py": (
        {"table.split('.', 1)[0]", "table", "name.split('.', 1)[0]", "name", "i", "cond"},
        "table/name: serving table names passed by the calling asset as code constants; i: an integer; cond: "
        "the caller's scope fragment (a code constant) and a fixed IN (SELECT ...) over a registered frame",
    ),
    "snapshot.py": (
        {"schema", "_quoted(table)", "sql", "alias"},
        "schemas and tables listed from the warehouse's own catalogue, double-quoted by _quoted(); "
        "`sql` the module's DERIVED statements; `alias` the attached snapshot's name, built from the pid",
    ),
}
# Where user-controlled names enter the package: no interpolated SQL there except constants/quoting helpers.
USER_INPUT_MODULES = ("sources/mapped.py", "sources/files.py", "sources/olist.py", "automation/inbox.py")


@functools.lru_cache(maxsize=1)
def _modules() -> tuple[tuple[str, ast.Module], ...]:
    """Every module of the package, parsed once per session."""
    return tuple(
        (str(path.relative_to(PACKAGE)), ast.parse(path.read_text(), filename=str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
    )


def _called_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        f = node.func
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    return None


def sql_interpolations(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, expression)`` of every non-constant piece of the SQL passed to ``.execute/.sql(...)``."""
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_METHODS
            and node.args
        ):
            continue
        sql = node.args[0]
        if isinstance(sql, ast.Constant):
            continue
        pieces = (
            [v.value for v in sql.values if isinstance(v, ast.FormattedValue)]
            if isinstance(sql, ast.JoinedStr)
            else [sql]
        )
        for piece in pieces:
            if _called_name(piece) in QUOTING_HELPERS:
                continue
            if isinstance(piece, ast.Name) and CONSTANT.fullmatch(piece.id):
                continue
            found.append((piece.lineno, ast.unparse(piece)))
    return found


def test_sql_is_built_from_parameters_or_quoted_identifiers_only():
    unreviewed = []
    for module, tree in _modules():
        allowed = REVIEWED_INTERPOLATIONS.get(module, (set(), ""))[0]
        unreviewed += [
            f"{module}:{line}: {{{expr}}}" for line, expr in sql_interpolations(tree) if expr not in allowed
        ]
    assert unreviewed == [], (
        "SQL interpolates values that are neither quoted (quote_ident / _lit) nor a "
        "reviewed internal identifier; use ? parameters or quote_ident:\n" + "\n".join(unreviewed)
    )


def test_user_input_modules_interpolate_nothing_into_sql():
    for module, tree in _modules():
        if module in USER_INPUT_MODULES:
            assert sql_interpolations(tree) == [], module


def test_the_sql_scan_catches_an_unquoted_name():
    tree = ast.parse(
        "def f(con, name, t):\n    con.execute(f'SELECT * FROM {name}')\n"
        "    con.execute(f'SELECT * FROM {quote_ident(t)} WHERE a = ?', [name])\n"
        "    con.sql(TABLE_SQL)\n    con.execute('SELECT ' + name)\n"
    )
    assert [e for _, e in sql_interpolations(tree)] == ["name", "'SELECT ' + name"]


def _torch_loads(tree: ast.AST) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "load"
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "torch"
    ]


def test_torch_load_always_uses_weights_only():
    calls, unsafe = 0, []
    for module, tree in _modules():
        for call in _torch_loads(tree):
            calls += 1
            kw = {k.arg: k.value for k in call.keywords}
            if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                unsafe.append(f"{module}:{call.lineno}")
    assert unsafe == [], f"torch.load without weights_only=True (arbitrary code on load): {unsafe}"
    assert calls >= 1  # the scan sees the one real call (MobileNet weights)


PICKLE_MODULES = frozenset({"pickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"})
# modules that may import pickle, only to subclass pickle.Unpickler with an allow-listing find_class
REVIEWED_UNPICKLERS = {"resign_models.py": "one-off migration of champions logged by the old pickle flavours"}


def only_restricted_unpicklers(tree: ast.AST) -> bool:
    """True when ``pickle`` is used only as ``pickle.UnpicklingError`` or as the base of a class that
    overrides ``find_class`` (so no global outside its allow-list can be resolved), and never called
    directly."""
    bases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body
        ):
            bases |= {id(b) for b in node.bases}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pickle":
            if node.attr == "UnpicklingError" or (node.attr == "Unpickler" and id(node) in bases):
                continue
            return False
    return True


def unsafe_loads(tree: ast.AST, restricted_unpickler_allowed: bool = False) -> list[str]:
    """Reads that can run code from the file (issue #20): any pickle-family import or load, an MLflow
    flavour's ``load_model`` (the pickle flavours unpickle), ``read_pickle``, ``np.load(allow_pickle=...)``,
    unsafe YAML loaders, ``torch.load`` without ``weights_only=True`` and skops' ``trusted=True``.  Models
    load through ``ml/safe_artifacts.py`` (safetensors, skops with a trusted-type list, JSON) after their
    signature verifies.
    """
    bad = []
    reviewed = restricted_unpickler_allowed and only_restricted_unpicklers(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [
                f"{node.lineno} import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in PICKLE_MODULES
                and not (reviewed and a.name == "pickle" and a.asname is None)
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            bad.append(f"{node.lineno} from {node.module} import")
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        attr, receiver = node.func.attr, ast.unparse(node.func.value)
        owner = receiver.split(".")[0]
        kw = {k.arg: k.value for k in node.keywords}
        if owner in PICKLE_MODULES and attr in ("load", "loads", "Unpickler"):
            bad.append(f"{node.lineno} {receiver}.{attr}")
        elif attr == "load_model" and "mlflow" in receiver:
            bad.append(f"{node.lineno} {receiver}.load_model")
        elif attr == "read_pickle":
            bad.append(f"{node.lineno} {receiver}.read_pickle")
        elif owner in ("np", "numpy") and attr == "load" and "allow_pickle" in kw:
            bad.append(f"{node.lineno} np.load(allow_pickle)")
        elif owner == "yaml" and attr in ("load", "unsafe_load", "full_load"):
            bad.append(f"{node.lineno} yaml.{attr}")
        elif (
            owner == "torch"
            and attr == "load"
            and not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True)
        ):
            bad.append(f"{node.lineno} torch.load without weights_only=True")
        elif attr == "load" and isinstance(kw.get("trusted"), ast.Constant) and kw["trusted"].value is True:
            bad.append(f"{node.lineno} {receiver}.load(trusted=True)")
    return bad


def test_no_unsafe_deserialisation_anywhere_in_the_package():
    bad = [
        f"{module}:{b}"
        for module, tree in _modules()
        for b in unsafe_loads(tree, restricted_unpickler_allowed=module in REVIEWED_UNPICKLERS)
    ]
    assert bad == [], f"reads that can execute code from a file: {bad}"


def test_the_unsafe_load_scan_catches_every_pattern():
    code = """
import pickle
from cloudpickle import loads
import joblib as jl
def f(path, mlflow, np, pd, yaml, torch, sio, flavor):
    pickle.load(open(path, "rb"))
    mlflow.sklearn.load_model(path)
    getattr(mlflow, flavor).load_model(path)
    pd.read_pickle(path)
    np.load(path, allow_pickle=True)
    yaml.load(path)
    torch.load(path)
    torch.load(path, weights_only=False)
    sio.load(path, trusted=True)
    torch.load(path, weights_only=True)  # safe
    sio.load(path, trusted=["sklearn.linear_model._logistic.LogisticRegression"])  # safe
    yaml.safe_load(path)  # safe
"""
    restricted = (
        "import pickle\nclass U(pickle.Unpickler):\n    def find_class(self, m, n):\n"
        "        raise pickle.UnpicklingError(m)\n"
    )
    assert unsafe_loads(ast.parse(restricted), restricted_unpickler_allowed=True) == []
    assert unsafe_loads(ast.parse(restricted)) == ["1 import pickle"]  # only in a reviewed module
    for escape in (
        "class U(pickle.Unpickler):\n    pass\n",  # no find_class: resolves any global
        "U = pickle.Unpickler\n",
        "pickle.Unpickler(f).load()\n",
    ):
        assert unsafe_loads(ast.parse("import pickle\n" + escape), restricted_unpickler_allowed=True), escape
    found = unsafe_loads(ast.parse(code))
    assert [b.split(" ", 1)[1] for b in found] == [
        "import pickle",
        "from cloudpickle import",
        "import joblib",
        "pickle.load",
        "mlflow.sklearn.load_model",
        "getattr(mlflow, flavor).load_model",
        "pd.read_pickle",
        "np.load(allow_pickle)",
        "yaml.load",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "sio.load(trusted=True)",
    ]


SECRET_FIELD = re.compile(r"(key|password|passwd|secret|token)$", re.IGNORECASE)


def test_secrets_reach_resources_only_as_envvar(monkeypatch, data_root):
    from ecom_pipeline.resources import build_resources

    monkeypatch.setenv("ECOM_PSEUDONYM_KEY", "a-test-key-that-is-long-enough-0123")
    resources = build_resources(Settings.from_env())
    key = resources["privacy"].pseudonym_key
    # an EnvVar is resolved at run time: the key never lands in run config, the UI or the run storage
    assert isinstance(key, dg.EnvVar) and key.env_var_name == "ECOM_PSEUDONYM_KEY"
    # every secret-looking field of every resource is an EnvVar or empty (local mode generates a key file)
    for name, res in resources.items():
        for field, value in getattr(res, "__dict__", {}).items():
            if SECRET_FIELD.search(field):
                assert isinstance(value, dg.EnvVar) or value == "", f"{name}.{field} is a literal"
    monkeypatch.delenv("ECOM_PSEUDONYM_KEY")
    assert build_resources(Settings.from_env())["privacy"].pseudonym_key == ""


def test_resource_definitions_never_pass_a_literal_secret():
    """AST: a keyword argument named like a secret in the package gets an EnvVar, never a string literal."""
    literal = []
    for module, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if (
                        kw.arg
                        and SECRET_FIELD.search(kw.arg)
                        and isinstance(kw.value, ast.Constant)
                        and isinstance(kw.value.value, str)
                        and kw.value.value
                    ):
                        literal.append(f"{module}:{node.lineno} {kw.arg}=")
    assert literal == []


def _compose_env_values(compose: dict):
    for service, spec in compose["services"].items():
        env = spec.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        for name, value in items:
            yield service, name, str(value)


def test_docker_secrets_come_from_the_environment_without_defaults():
    compose = yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())
    secrets = [(s, n, v) for s, n, v in _compose_env_values(compose) if SECRET_FIELD.search(n)]
    assert {n for _, n, _ in secrets} >= {
        "POSTGRES_PASSWORD",
        "DAGSTER_POSTGRES_PASSWORD",
        "ECOM_PSEUDONYM_KEY",
    }
    for service, name, value in secrets:
        # ${VAR:?message} fails the deployment when unset; ${VAR:-default} would ship a known password
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), f"{service}.{name} = {value!r}"
    # the MLflow backend URI embeds the password: only as the same required variable
    mlflow_cmd = " ".join(compose["services"]["mlflow"]["command"])
    assert re.search(r":\$\{POSTGRES_PASSWORD:\?[^}]*\}@", mlflow_cmd), mlflow_cmd
    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_POSTGRES_PASSWORD"}
    example = (DOCKER / ".env.example").read_text()
    assert "change-me" in example.lower()  # the example carries placeholders, not a usable secret


@pytest.mark.parametrize("path", [".gitignore"])
def test_real_env_files_and_key_files_are_not_committed(path):
    ignored = (REPO_ROOT / path).read_text()
    assert re.search(r"^(docker/)?\.env$|^\.env$|^\*\*/\.env$", ignored, re.MULTILINE), (
        "docker/.env must be ignored"
    )
    assert "data/" in ignored or ".pseudonym_key" in ignored


def test_no_credentials_written_into_urls():
    userinfo = re.compile(
        r"[a-z]+://([^:/@\s${}]+):([^@\s${}]+)@"
    )  # scheme://user:password@ with literal parts
    offenders = []
    for path in [*DOCKER.rglob("*.y*ml"), *PACKAGE.rglob("*.py")]:
        for m in userinfo.finditer(path.read_text()):
            offenders.append(f"{path.relative_to(REPO_ROOT)}: {m.group(1)}:***")
    assert offenders == [], offenders
