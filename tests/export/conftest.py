"""The portal's fixtures (the gateway with the portal on, moto as Cognito) for the export tests."""

from tests.portal.conftest import portal_gateway, portal_pool

__all__ = ["portal_gateway", "portal_pool"]
