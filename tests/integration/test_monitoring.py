"""The monitoring files (monitoring/) against a real relay's /metrics.

The alerting rules, their promtool unit tests and the Grafana dashboard name
series by hand; a typo, a counter without its ``_total``, a label the relay
never sets or a metric renamed in ``s3relay/ops/metrics.py`` would leave an
alert that can never fire and a panel that stays empty, silently.  So a relay
is started with every kind of series the files use made to exist (TLS for the
certificate gauge, a fetched credential set whose source fails and recovers
for the breaker and expiry gauges, an upstream link cut for the upstream
errors, refusals by S3 code and admission rule) and its scrape is compared
with every expression: each metric name must be a sample name on the page
(``_bucket``/``_sum``/``_count``/``_total`` as the page spells them) and each
label an expression selects, groups by or shows must be on those series.
Once as a relay of its own and once with ``[server] workers = 2``, whose
supervisor serves a summed page.  With promtool installed (Debian's
``prometheus`` package; ``.ci/monitoring`` installs it) the rules are also
checked and unit-tested, and the dashboard's expressions parsed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from tests import harness
from tests.fake_vault import FakeVault
from tests.integration.conftest import CLIENT_KEY, boto_client, relay_config
from tests.tcptap import TcpTap

MONITORING = harness.REPO / "monitoring"
RULES = MONITORING / "prometheus" / "s3relay.rules.yml"
RULE_TESTS = MONITORING / "prometheus" / "s3relay.rules.test.yml"
DASHBOARD = MONITORING / "grafana" / "s3relay.json"

#: Series the rules use that the relay does not export, and what does.
EXTERNAL = {
    "up": "Prometheus itself, per scrape target",
    "probe_success": "blackbox_exporter, probing /readyz (monitoring/README.md)",
}
#: Labels Prometheus adds to every series it scrapes (and to ``up``).
TARGET_LABELS = frozenset({"job", "instance"})

# -- reading expressions ------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
#: The relay's own names, wherever they appear (also as label_values' argument).
_OWN_NAME = re.compile(r"(?<![A-Za-z0-9_:$])((?:s3relay|process)_[A-Za-z0-9_]*)")
#: Any name with a selector: ``up{...}``.
_SELECTOR = re.compile(r"(?<![A-Za-z0-9_:$])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*([^,()]+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")
_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ANNOTATION_LABEL = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Expression:
    """One PromQL expression from a monitoring file, and the labels shown with it."""

    where: str
    text: str
    #: Labels a legend or annotation template shows (``{{operation}}``, ``$labels.code``).
    shown: frozenset[str] = frozenset()


def _bare(expr: str) -> str:
    """``expr`` with its string literals emptied and its ranges dropped."""
    return _RANGE.sub("", _STRING.sub('""', expr))


def names_in(expr: str) -> set[str]:
    """The metric names ``expr`` uses: the relay's prefixes, and any name with a selector."""
    bare = _bare(expr)
    return set(_OWN_NAME.findall(bare)) | {name for name, _ in _SELECTOR.findall(bare)}


def selectors_in(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for each ``name{...}`` in ``expr``."""
    return [(name, set(_MATCHER.findall(body))) for name, body in _SELECTOR.findall(_bare(expr))]


def grouping_labels(expr: str) -> set[str]:
    """Labels of by/without/on/ignoring/group_left/group_right and label_values."""
    bare = _bare(expr)
    labels = {label.strip() for group in _GROUPING.findall(bare)
              for label in group.split(",") if label.strip()}
    return labels | {label for _, label in _LABEL_VALUES.findall(bare)}


def rule_expressions(path: Path = RULES) -> list[Expression]:
    found = []
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            templates = " ".join(str(v) for v in (rule.get("annotations") or {}).values())
            found.append(Expression(f"{path.name}: {name}", str(rule["expr"]),
                                    frozenset(_ANNOTATION_LABEL.findall(templates))))
    return found


def rule_test_series(path: Path = RULE_TESTS) -> list[Expression]:
    """The input series of the promtool tests, as selectors."""
    return [Expression(f"{path.name}: {test['name']}", str(series["series"]))
            for test in yaml.safe_load(path.read_text())["tests"]
            for series in test.get("input_series", [])]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_expressions(path: Path = DASHBOARD) -> list[Expression]:
    dashboard = json.loads(path.read_text())
    found = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            found.append(Expression(f"{path.name}: panel {panel['title']!r}", target["expr"],
                                    frozenset(_LEGEND.findall(target.get("legendFormat", "")))))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        for text in {query, variable.get("definition") or query}:
            found.append(Expression(f"{path.name}: variable ${variable['name']}", text))
    return found


def all_expressions() -> list[Expression]:
    return rule_expressions() + rule_test_series() + dashboard_expressions()


# -- the scrape --------------------------------------------------------------------


def sample_labels(page: str) -> dict[str, set[str]]:
    """Sample name -> the label names its samples carry, from a /metrics page."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def problems(expressions: list[Expression], exported: Mapping[str, set[str]]) -> list[str]:
    """What in ``expressions`` does not match the series ``exported``, one line each."""
    found = []
    for e in expressions:
        names = names_in(e.text)
        if not names and not e.text.lstrip().startswith("vector("):
            found.append(f"{e.where}: names no metric: {e.text!r}")
        for name in sorted(names):
            if name not in exported and name not in EXTERNAL:
                near = sorted(n for n in exported if n.startswith(name) or name.startswith(n))
                found.append(f"{e.where}: {name} is not on the relay's /metrics page"
                             + (f" (it has {', '.join(near)})" if near else ""))
        own = set().union(*(exported.get(n, set()) for n in names)) | TARGET_LABELS
        for name, matched in selectors_in(e.text):
            if name in EXTERNAL or name not in exported:
                continue
            for label in sorted(matched - exported[name] - TARGET_LABELS - {"__name__"}):
                found.append(f"{e.where}: {name} has no label {label!r} "
                             f"(it has {sorted(exported[name]) or 'none'})")
        for label in sorted((grouping_labels(e.text) | e.shown) - own):
            found.append(f"{e.where}: label {label!r} is on none of {sorted(names)}")
    return found


# -- a relay with every kind of series --------------------------------------------------


@dataclass
class Scraped:
    relay: harness.Relay
    metrics_url: str

    def page(self) -> str:
        return requests.get(f"{self.metrics_url}/metrics", timeout=10).text


#: Series that exist only once something happened; the fixture waits for them.
EVENTFUL = (
    "s3relay_credential_source_circuit_state", "s3relay_credentials_expiry_timestamp_seconds",
    "s3relay_credential_refresh_failures_total", "s3relay_tls_certificate_expiry_timestamp_seconds",
    "s3relay_upstream_errors_total", "s3relay_refusals_total", "s3relay_admission_refusals_total",
    "s3relay_request_duration_seconds_bucket", "s3relay_requests_total",
)


def iam_key(s3: harness.S3Server, user: str) -> tuple[str, str]:
    """A key of a new IAM user allowed everything (what the fake Vault hands out)."""
    iam: Any = s3.client("iam")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module", params=[1, 2], ids=["single", "workers"])
def scraped(
    request: pytest.FixtureRequest,
    workdir: Path,
    s3: harness.S3Server,
    self_key: tuple[str, str],
    tls_files: tuple[Path, Path],
) -> Iterator[Scraped]:
    workers: int = request.param
    cert, key = tls_files
    port, metrics_port = harness.free_port(), harness.free_port()
    upstream_key = iam_key(s3, f"monitoring-{port}")
    tap = TcpTap(s3.port)
    vault = FakeVault(token="hvs.monitoring")
    vault.start()
    relay = None
    try:
        vault.set_credentials(upstream_key[0], upstream_key[1], "", 900)
        # Its source fails first: the breaker opens, goes half-open, closes.
        vault.fail_next("503", times=4)
        token = workdir / f"vault-token-{port}"
        token.write_text("hvs.monitoring\n")
        token.chmod(0o600)
        listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        text = relay_config(s3, listen, self_key, f"http://127.0.0.1:{tap.port}")
        server = f"allowed_hostnames = 127.0.0.1:{port}\n"
        if workers > 1:
            server += f"workers = {workers}\n"
        text = text.replace("\n[upstream]\n", f"{server}\n[upstream]\n", 1)
        text += f"""
[credentials:fetched]
source = vault
vault_url = {vault.url}
path = aws/creds/s3relay
token_file = {token}
retry_interval = 0.2
failure_threshold = 2
open_interval = 1

[client:carol]
access_key_id = AKIDRELAYCLIENT00009
secret_access_key = client-secret-0009/abcdefghijklmnopqrstu
credentials = fetched

[metrics]
listen = tcp:{metrics_port}:interface=127.0.0.1
"""
        relay = harness.start_relay(workdir, text, port, "https")
        harness.wait_for_port(metrics_port, relay.process, relay.log)
        watched = Scraped(relay, f"http://127.0.0.1:{metrics_port}")
        bucket = f"monitoring-{workers}-{port}"
        s3.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
        client = boto_client(relay.url, verify=str(cert))
        client.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000)  # a success
        assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x" * 1000
        with pytest.raises(ClientError):  # a refusal by code
            boto_client(relay.url, (CLIENT_KEY[0], "wrong"), verify=str(cert)).list_objects_v2(
                Bucket=bucket)
        refused = requests.get(f"{relay.url}/{bucket}", headers={"Host": "elsewhere.example"},
                               verify=str(cert), timeout=10)
        assert refused.status_code == 400  # an admission refusal (rule "host")
        tap.cut_down_after = 0  # the upstream link dies before any answer
        with pytest.raises(ClientError):
            client.get_object(Bucket=bucket, Key="k")
        tap.cut_down_after = None
        # The fetched credentials: refused, then fetched; with workers, the
        # workers' pages collected.

        def complete() -> bool:
            exported = sample_labels(watched.page())
            return all(name in exported for name in EVENTFUL)
        assert harness.eventually(complete, 60), (
            f"missing {[n for n in EVENTFUL if n not in sample_labels(watched.page())]}\n"
            + relay.output()[-3000:])
        yield watched
    finally:
        if relay is not None:
            harness.stop(relay.process)
        vault.stop()
        tap.close()


@pytest.fixture(scope="module")
def exported(scraped: Scraped) -> dict[str, set[str]]:
    return sample_labels(scraped.page())


def test_the_relay_exports_every_series_the_monitoring_files_use(
    exported: dict[str, set[str]],
) -> None:
    expressions = all_expressions()
    assert len(rule_expressions()) >= 6 and len(dashboard_expressions()) >= 20
    found = problems(expressions, exported)
    assert not found, "\n".join(found)


#: s3relay_ metrics deliberately on no panel and in no rule, with the reason.
UNMONITORED: dict[str, str] = {}


def _family(name: str) -> str:
    return re.sub(r"_(bucket|sum|count|total)$", "", name)


def test_every_relay_metric_is_on_the_dashboard_or_in_a_rule(
    exported: dict[str, set[str]],
) -> None:
    """A metric added to the relay shows up here: give it a panel in
    monitoring/grafana/s3relay.json (or a rule), or list it in UNMONITORED."""
    used = {_family(name) for e in all_expressions() for name in names_in(e.text)}
    unused = sorted({
        _family(name) for name in exported
        if name.startswith("s3relay_") and not name.endswith("_created")
        and _family(name) not in used and _family(name) not in UNMONITORED
    })
    assert not unused, f"exported but on no panel and in no rule: {unused}"


def test_a_name_the_relay_does_not_export_is_caught(exported: dict[str, set[str]]) -> None:
    """The checks above would catch a typo: they are not vacuous."""
    wrong = [
        Expression("typo", "rate(s3relay_request_total[5m])"),
        Expression("no _total", 'sum by (code) (rate(s3relay_refusals{job="s3relay"}[5m]))'),
        Expression("a histogram without _bucket",
                   "histogram_quantile(0.9, rate(s3relay_request_duration_seconds[5m]))"),
        Expression("other prefix", 'rate(relay_requests_total{job="s3relay"}[5m])'),
        Expression("a label it lacks", 'rate(s3relay_requests_total{bucket="b"}[5m])'),
        Expression("a grouping label it lacks",
                   "sum by (client) (rate(s3relay_sent_bytes_total[5m]))"),
        Expression("a legend label it lacks",
                   "rate(s3relay_requests_total[5m])", frozenset({"key"})),
    ]
    for expression in wrong:
        assert problems([expression], exported), expression.where
    right = Expression("right", 'sum by (le, operation) (rate('
                       's3relay_request_duration_seconds_bucket{job=~"$job"}[$__rate_interval]))',
                       frozenset({"operation", "instance"}))
    assert problems([right], exported) == []


# -- promtool -------------------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian package prometheus; bash .ci/monitoring installs it)",
)


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "rules", RULES.name, cwd=RULES.parent)


@needs_promtool
def test_promtool_unit_tests_the_rules() -> None:
    assert "SUCCESS" in promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)


def test_every_rule_has_a_test_that_fires_it() -> None:
    """promtool passes a test file that never mentions a rule: so check that each
    alert has a case where it fires and one where it does not."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for expression in rule_expressions():
        alert = expression.where.split(": ", 1)[1]
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case.get("exp_alerts") for case in mine), f"{alert}: no case where it fires"
        assert any(not case.get("exp_alerts") for case in mine), \
            f"{alert}: no case where it is quiet"


@needs_promtool
def test_promtool_parses_the_dashboard_expressions(tmp_path: Path) -> None:
    """Each panel's expression, Grafana's variables filled in, as a recording rule."""
    def filled(expr: str) -> str:
        expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)
    rules = [{"record": f"dashboard:expression_{i}", "expr": filled(e.text)}
             for i, e in enumerate(dashboard_expressions()) if "label_values(" not in e.text]
    rules += [{"record": f"dashboard:variable_{i}", "expr": filled(m.group(1))}
              for i, e in enumerate(dashboard_expressions())
              for m in _LABEL_VALUES.finditer(e.text)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert "SUCCESS" in promtool("check", "rules", path.name, cwd=tmp_path)


def test_the_dashboard_uses_its_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert "$job" in target["expr"] and "$instance" in target["expr"], panel["title"]
    builtin = {"row", "timeseries", "stat", "state-timeline", "gauge", "bargauge", "table", "text"}
    assert {p["type"] for p in _panels(dashboard["panels"])} <= builtin  # no plugins
