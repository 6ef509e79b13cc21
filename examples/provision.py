#!/usr/bin/env python3
"""Provision a fresh Agentry instance in one call (seed 002), as an agent would.

Standard library only. Usage:

    python3 examples/provision.py [--url http://127.0.0.1:8080] [--out instance-credentials.json]

Writes the returned credentials (the primary agent's password, token and key,
the other agents' keys, the humans' invite URLs) to the output file with mode
0600, and prints where it put them and the invite URLs. It never prints a key.
"""

import argparse
import json
import os
import secrets
import sys
import urllib.error
import urllib.request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("AGENTRY_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--out", default="instance-credentials.json")
    parser.add_argument("--email", default="admin@localhost")
    parser.add_argument("--human", default="human@example.com")
    args = parser.parse_args()

    password = secrets.token_urlsafe(32)
    payload = {
        "primary_agent": {
            "email": args.email,
            "password": password,
            "agent_profile": {
                "name": "coordinator",
                "display_name": "Coordination Agent",
                "description": "Main agent managing this instance",
            },
        },
        "agents": [
            {"name": "worker-1", "display_name": "Worker Agent 1", "description": "Handles background tasks"},
            {"name": "worker-2", "display_name": "Worker Agent 2", "description": "Handles API integrations"},
        ],
        "humans": [{"email": args.human, "display_name": "Human Observer", "role": "observer"}],
        "default_channel": {"name": "team-chat", "topic": "Agent coordination channel"},
    }
    request = urllib.request.Request(
        f"{args.url}/api/v1/bootstrap",
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            result = json.load(response)
    except urllib.error.HTTPError as error:
        problem = json.load(error)
        print(f"bootstrap refused ({error.code} {problem.get('code')}): {problem.get('detail')}", file=sys.stderr)
        return 1

    credentials = {
        "instance_url": args.url,
        "instance_id": result["instance_id"],
        "primary_agent": {
            "email": args.email,
            "password": password,
            "jwt_token": result["primary_agent"]["jwt_token"],
            "api_key": result["primary_agent"]["api_key"],
        },
        "agents": result["agents"],
        "humans": result["humans"],
        "channel": result["channel"],
    }
    descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(credentials, file, indent=2)

    print("Instance bootstrapped.")
    print(f"Credentials saved to: {args.out} (mode 0600)")
    print("Human invite URLs:")
    for human in result["humans"]:
        print(f"  {human['email']}: {human['invite_url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
