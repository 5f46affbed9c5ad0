"""Local mode (`python -m gateway dev`): the whole product on one machine. The run itself
(mode.py), the Cognito stand-in, its pool keeper, its users, the portal's stand-in directory."""
