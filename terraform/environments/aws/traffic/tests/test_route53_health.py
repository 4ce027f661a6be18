"""route53-health.py against a stand-in for the AWS CLI (Route 53 cannot be reached here): a
script on disk that answers `get-health-check-status` with recorded-shape observations."""

import importlib.util
import io
import json
import os
import pathlib
import stat
import tempfile
import unittest

HERE = pathlib.Path(__file__).resolve().parent
SPEC = importlib.util.spec_from_file_location("route53_health", HERE.parent / "route53-health.py")
health = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(health)


def observations(successes, failures):
    ok = {"StatusReport": {"Status": "Success: HTTP Status Code 200, OK"}}
    bad = {"StatusReport": {"Status": "Failure: HTTP Status Code 503, Service Unavailable"}}
    return [dict(ok, Region="us-east-1")] * successes + [dict(bad, Region="eu-west-1")] * failures


class Route53Health(unittest.TestCase):
    def test_more_than_18_percent_of_checkers_is_healthy(self):
        self.assertTrue(health.healthy(observations(2, 8)))
        self.assertFalse(health.healthy(observations(1, 15)))
        self.assertFalse(health.healthy(observations(0, 16)))
        self.assertFalse(health.healthy([]), "no observation is no evidence of health")

    def test_each_region_is_asked_and_an_unreadable_check_is_unhealthy(self):
        with tempfile.TemporaryDirectory() as tmp:
            answers = {"hc-us": observations(16, 0), "hc-eu": observations(0, 16)}
            cli = pathlib.Path(tmp, "aws")
            cli.write_text(
                "#!/usr/bin/env python3\n"
                "import json, sys\n"
                f"answers = {json.dumps(answers)}\n"
                "check = sys.argv[sys.argv.index('--health-check-id') + 1]\n"
                "if check not in answers:\n"
                "    sys.exit('An error occurred (NoSuchHealthCheck)')\n"
                "print(json.dumps({'HealthCheckObservations': answers[check]}))\n"
            )
            cli.chmod(cli.stat().st_mode | stat.S_IEXEC)
            query = {"health_checks": json.dumps({"us-east": "hc-us", "eu-west": "hc-eu", "ap-south": "hc-gone"})}
            result = health.main(io.StringIO(json.dumps(query)), aws=str(cli))
        self.assertEqual(result, {"us-east": "true", "eu-west": "false", "ap-south": "false"})


if __name__ == "__main__":
    unittest.main()
