"""task queue: jobs.attempts / message_id / cancel_requested (the worker's bookkeeping), the webhook columns of
jobs, api_keys.webhook_secret

Revision ID: 0004_task_queue
Revises: 0003_hardening
Create Date: 2026-12-02 00:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_task_queue'
down_revision = '0003_hardening'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('message_id', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('cancel_requested', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('api_key_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('callback_url', sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column('webhook_status', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('webhook_attempts', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('webhook_error', sa.Text(), nullable=True))
        batch.add_column(sa.Column('webhook_delivered_at', sa.DateTime(), nullable=True))
        batch.create_foreign_key('fk_jobs_api_key_id', 'api_keys', ['api_key_id'], ['id'], ondelete='SET NULL')
    with op.batch_alter_table('api_keys') as batch:
        batch.add_column(sa.Column('webhook_secret', sa.String(length=64), nullable=True))
    # jobs the old in-front runner had attempted count as one try
    op.execute("UPDATE jobs SET attempts = 1 WHERE status IN ('running', 'done', 'failed')")


def downgrade() -> None:
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('webhook_secret')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_constraint('fk_jobs_api_key_id', type_='foreignkey')
        for name in ('webhook_delivered_at', 'webhook_error', 'webhook_attempts', 'webhook_status', 'callback_url',
                     'api_key_id', 'cancel_requested', 'message_id', 'attempts'):
            batch.drop_column(name)
