"""Seed 000's MCP tools through the official Python SDK (`mcp`, pinned by
`cargo xtask test`), against a running agentryd.

Usage: mcp_client.py <base url> <provisioner key> [<mTLS base url> <scratch dir>]

With the mTLS listener's URL, the agent also trades a CSR for a certificate
(POST /v1/agent/auth/cert) and calls its tools over mTLS with no bearer.

Prints one JSON object of what the client saw; the Rust test that runs this
script makes the assertions, so a failure names the field that differs.
"""

import asyncio
import json
import ssl
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def connect(url, mode, bearer=None, tls=None):
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    verify = True
    if tls is not None:
        ca, cert, key = tls
        verify = ssl.create_default_context(cafile=ca)
        verify.load_cert_chain(cert, key)
    http = httpx2.AsyncClient(headers=headers, verify=verify, timeout=30)
    return http, Client(streamable_http_client(url, http_client=http), mode=mode)


def seen(result):
    """What a test needs of a CallToolResult."""
    return {
        "is_error": result.is_error,
        "text": result.content[0].text if result.content else None,
        "structured": result.structured_content,
    }


async def session(url, mode, bearer, calls, tls=None):
    """Connects, lists the tools and makes `calls` in order; `calls` may
    refer to an earlier result's structured content as {"$from": [i, key]}."""
    http, client = connect(url, mode, bearer, tls)
    out = {}
    async with http, client:
        out["protocol_version"] = client.protocol_version
        listed = await client.list_tools()
        out["tools"] = [
            {"name": t.name, "schema": t.input_schema, "read_only": t.annotations.read_only_hint}
            for t in listed.tools
        ]
        results = []
        for name, arguments in calls:
            arguments = {
                key: results[value["$from"][0]]["structured"][value["$from"][1]]
                if isinstance(value, dict) and "$from" in value
                else value
                for key, value in arguments.items()
            }
            results.append(seen(await client.call_tool(name, arguments)))
        out["results"] = results
    return out


async def refused(url, mode, bearer):
    """What the client raises when its credential is refused."""
    http, client = connect(url, mode, bearer)
    codes = None
    try:
        async with http, client:
            await client.list_tools()
    except* MCPError as group:
        codes = [error.error.code for error in flatten(group)]
    return codes


def flatten(group):
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from flatten(error)
        else:
            yield error


async def certificate(base, jwt, scratch):
    """The agent's key and certificate, from a CSR, as files in `scratch`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-the-agent")]))
        .sign(key, hashes.SHA256())
    )
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {jwt}"}) as http:
        answer = await http.post(
            f"{base}/v1/agent/auth/cert",
            json={"csr": csr.public_bytes(serialization.Encoding.PEM).decode()},
        )
        answer.raise_for_status()
        issued = answer.json()
    paths = {name: f"{scratch}/{name}.pem" for name in ("ca", "cert", "key")}
    with open(paths["ca"], "w") as f:
        f.write(issued["ca_pem"])
    with open(paths["cert"], "w") as f:
        f.write(issued["cert_pem"])
    with open(paths["key"], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths["ca"], paths["cert"], paths["key"]


async def main(argv):
    base, provisioner = argv[0], argv[1]
    url = f"{base}/mcp"
    report = {}
    report["provisioner"] = await session(
        url,
        "auto",
        provisioner,
        [
            (
                "br_bootstrap_agent",
                {
                    "agent_id": "mcp-agent",
                    "display_name": "MCP Agent",
                    "budget_daily_usd": 1.0,
                    "metadata": {"can_delegate": True},
                },
            ),
            ("br_agent_status", {}),
        ],
    )
    jwt = report["provisioner"]["results"][0]["structured"]["jwt"]
    report["agent"] = await session(
        url,
        "auto",
        jwt,
        [
            ("br_agent_status", {}),
            ("br_agent_limits", {}),
            ("br_spend", {"amount_usd": 0.25, "idempotency_key": "mcp-1"}),
            ("br_spend", {"amount_usd": 5}),
            ("br_hold", {"amount_usd": 0.5}),
            ("br_capture", {"hold_id": {"$from": [4, "hold_id"]}, "amount_usd": 0.125}),
            ("br_release", {"hold_id": {"$from": [4, "hold_id"]}}),
            ("br_delegate", {"agent_id": "mcp-child", "budget_allocation_usd": 0.25}),
            ("br_list_sub_agents", {}),
            ("br_terminate_sub_agent", {"child_agent_id": "mcp-child"}),
            ("br_agent_anomaly", {}),
            ("br_spend", {"amount_usd": "lots"}),
        ],
    )
    report["legacy"] = await session(url, "legacy", jwt, [("br_agent_limits", {})])
    report["refused"] = await refused(url, "auto", "not-a-credential")
    report["refused_legacy"] = await refused(url, "legacy", None)
    if len(argv) > 2:
        tls_base, scratch = argv[2], argv[3]
        tls = await certificate(base, jwt, scratch)
        report["mtls"] = await session(
            f"{tls_base}/mcp",
            "auto",
            None,
            [("br_agent_status", {}), ("br_spend", {"amount_usd": 0.01})],
            tls=tls,
        )
    print(json.dumps(report))


asyncio.run(main(sys.argv[1:]))
