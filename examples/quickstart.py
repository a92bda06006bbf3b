"""Quick start: evaluate the sample ruleset locally, no server needed.

Run from the repository root: ``python examples/quickstart.py [RULESET_FILE]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from phaseflag import EvaluationContext, PhaseFlagClient

SAMPLE = Path(__file__).resolve().parents[1] / "bootstrap_samples" / "ruleset.json"


def main() -> int:
    ruleset = sys.argv[1] if len(sys.argv) > 1 else str(SAMPLE)
    # base_url="" disables HTTP: the client serves the bootstrap file only.
    with PhaseFlagClient(base_url="", api_key="", bootstrap_file=ruleset) as client:
        client.wait_until_ready(timeout=1.0)
        users = [
            EvaluationContext(user_id="user-1"),
            EvaluationContext(user_id="user-123", attributes={"plan": "pro", "country": "US"}),
            EvaluationContext(user_id="user-456", attributes={"plan": "free", "country": "US"}),
            EvaluationContext(
                user_id="user-789",
                attributes={
                    "plan": "enterprise",
                    "account_age": 400,
                    "app_version": "2.4.1",
                    "email": "alice@example.com",
                },
            ),
            EvaluationContext(session_id="sess-abc", attributes={"app_version": "1.9.0"}),
        ]
        print(f"ruleset {client.status().ruleset_version} from {ruleset}\n")
        for ctx in users:
            who = ctx.user_id or f"session {ctx.session_id}"
            checkout = client.get_variation("new-checkout-flow", ctx)
            print(f"{who}  {dict(ctx.attributes)}")
            if checkout is not None:
                print(
                    f"  new-checkout-flow  = {checkout.value!s:<6} ({checkout.reason}"
                    f"{', rule ' + checkout.rule_id if checkout.rule_id else ''})"
                )
            print(f"  ui-theme           = {client.get_string_value('ui-theme', 'light', ctx)}")
            print(f"  checkout-config    = {client.get_json_value('checkout-config', {}, ctx)}")
            print(f"  beta-feature       = {client.get_boolean_value('beta-feature', False, ctx)}")
            per_page = client.get_integer_value("search-results-per-page", 10, ctx)
            print(f"  results per page   = {per_page}")
        print("\nall flags for user-123:", client.all_flags(users[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
