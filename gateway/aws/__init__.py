"""AWS clients as the gateway makes them (boto3 with bounded timeouts and retries)."""
