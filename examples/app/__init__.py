"""A small multi-tenant notes service: workspaces, users, login sessions with CSRF tokens, encrypted notes.

Async SQLAlchemy 2 over asyncpg, with the encryption done inside PostgreSQL by pgcrypto through two SQL
functions (`app_encrypt`/`app_decrypt`) so the key never has to be handled by the ORM. It exists to be
tested: examples/fragile and examples/robust are two suites over it.
"""
