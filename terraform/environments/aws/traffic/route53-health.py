#!/usr/bin/env python3
"""What Route 53's health checkers see now, for the traffic stack's plan (Terraform's
`external` data source): reads {"health_checks": "<JSON: region -> health check id>"} on
stdin and prints {"<region>": "true" | "false"}.

A region is healthy when more than 18% of the checkers report it healthy, Route 53's own rule
for an HTTPS check ("Route 53 considers an endpoint healthy if more than 18% of health
checkers report that it's healthy"). It asks with the AWS CLI
(`aws route53 get-health-check-status`), so it runs wherever the operator's AWS credentials
do; a check it cannot read is reported unhealthy, which only ever refuses returning traffic.
"""

import json
import subprocess
import sys

HEALTHY_SHARE = 0.18


def healthy(observations):
    """Whether more than 18% of `observations` (GetHealthCheckStatus's) report success."""
    if not observations:
        return False
    ok = sum(1 for o in observations if o.get("StatusReport", {}).get("Status", "").startswith("Success"))
    return ok / len(observations) > HEALTHY_SHARE


def status(check_id, aws="aws"):
    """The checkers' observations of one health check, or None when they cannot be read."""
    try:
        out = subprocess.run(
            [aws, "route53", "get-health-check-status", "--health-check-id", check_id, "--output", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return json.loads(out.stdout).get("HealthCheckObservations", [])
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        print(f"route53-health: {check_id}: {error}", file=sys.stderr)
        return None


def main(stdin, aws="aws"):
    query = json.load(stdin)
    checks = json.loads(query.get("health_checks") or "{}")
    return {region: str(healthy(status(check_id, aws) or [])).lower() for region, check_id in checks.items()}


if __name__ == "__main__":
    json.dump(main(sys.stdin), sys.stdout)
