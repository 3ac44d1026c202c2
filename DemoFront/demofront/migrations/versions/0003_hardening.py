"""hardening: jobs.seed as a 64-bit integer, jobs.expired_at (retention), users.session_generation (sign-out)

Revision ID: 0003_hardening
Revises: 0002_job_attempts
Create Date: 2026-12-01 09:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_hardening'
down_revision = '0002_job_attempts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.alter_column('seed', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)
        batch.add_column(sa.Column('expired_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('session_generation', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('session_generation')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('expired_at')
        batch.alter_column('seed', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
