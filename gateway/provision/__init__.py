"""Account provisioning ahead of the first login: `POST /provision-user` and its Lambda."""
