"""Local accounts: users, password logins, sessions and API tokens.

Sits just above p2p: each user has an Ed25519 author key that the node holds for them,
and creating a user publishes their signed ``profile`` record.
"""
