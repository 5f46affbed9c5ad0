"""User pools on the moto server that stands in for Cognito during a benchmark run."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from bench.procs import DUMMY_AWS

REGION = DUMMY_AWS["AWS_DEFAULT_REGION"]
PASSWORD = "Bench-Passw0rd!"  # noqa: S105 - a moto user's password


@dataclass
class Pool:
    boto: Any
    endpoint: str
    pool_id: str
    client_id: str

    def settings(self) -> dict[str, str]:
        """What `procs.Gateway` needs to point the gateway at this pool."""
        return {
            "pool_id": self.pool_id,
            "client_id": self.client_id,
            "region": REGION,
            "endpoint": self.endpoint,
        }

    def add_user(self, username: str, password: str = PASSWORD) -> None:
        self.boto.admin_create_user(
            UserPoolId=self.pool_id,
            Username=username,
            UserAttributes=[
                {"Name": "email", "Value": f"{username}@example.com"},
                {"Name": "email_verified", "Value": "true"},
            ],
            MessageAction="SUPPRESS",
        )
        self.boto.admin_set_user_password(
            UserPoolId=self.pool_id, Username=username, Password=password, Permanent=True
        )

    def add_users(self, names: list[str]) -> None:
        for name in names:
            self.add_user(name)


def new_pool(endpoint: str) -> Pool:
    boto = boto3.session.Session(
        aws_access_key_id=DUMMY_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_AWS["AWS_SECRET_ACCESS_KEY"],
    ).client(
        "cognito-idp",
        endpoint_url=endpoint,
        region_name=REGION,
        config=BotoConfig(retries={"max_attempts": 2}, read_timeout=30),
    )
    pool_id = boto.create_user_pool(PoolName=f"bench-{uuid.uuid4().hex[:6]}")["UserPool"]["Id"]
    client = boto.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="gateway",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        ReadAttributes=["email", "email_verified"],
    )["UserPoolClient"]
    return Pool(boto=boto, endpoint=endpoint, pool_id=pool_id, client_id=client["ClientId"])
