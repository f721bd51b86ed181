#!/usr/bin/env python3
"""Evaluates every query of a Grafana dashboard against a live Prometheus; fails unless each
returns data. Used by .ci/deploy-checks against a real bridge under load.

    check_dashboard.py http://127.0.0.1:9090 thryve-bridge.json [--rate-interval 15s]

Dashboard variables become what Grafana would send with "All" selected: `$job`, `$instance`
-> `.*`, `$__rate_interval` -> --rate-interval. The variables' own `label_values(...)` queries
are checked too. Standard library only.
"""

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request


def query(prometheus, expr):
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def substitute(expr, rate_interval):
    expr = expr.replace("$__rate_interval", rate_interval)
    return re.sub(r"\$\{?(job|instance)\}?", ".*", expr)


def queries(dashboard, rate_interval):
    for panel in dashboard["panels"]:
        for nested in [panel, *panel.get("panels", [])]:
            for target in nested.get("targets", []):
                yield nested["title"], target["refId"], substitute(target["expr"], rate_interval)
    for variable in dashboard.get("templating", {}).get("list", []):
        definition = variable.get("definition", "")
        found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
        if found:
            # label_values(selector, label): the selector must match series with that label.
            selector, label = found.groups()
            yield f"variable ${variable['name']}", label, substitute(
                f"count by ({label}) ({selector})", rate_interval
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prometheus")
    parser.add_argument("dashboard")
    parser.add_argument("--rate-interval", default="15s")
    args = parser.parse_args()
    with open(args.dashboard) as f:
        dashboard = json.load(f)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    empty = [p["title"] for p in panels if not p.get("targets")]
    failures = [f"panel {title!r} has no query" for title in empty]
    checked = 0
    for title, ref, expr in queries(dashboard, args.rate_interval):
        checked += 1
        try:
            result = query(args.prometheus, expr)
        except Exception as error:  # noqa: BLE001: reported with the query
            failures.append(f"{title} [{ref}]: {error}")
            continue
        status = f"{len(result)} series" if result else "NO DATA"
        print(f"{status:>10}  {title} [{ref}]  {expr}")
        if not result:
            failures.append(f"{title} [{ref}] returned no data: {expr}")
    print(f"{checked} queries in {len(panels)} panels")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
