"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json."""
from __future__ import annotations

from typing import Any

from sadtalker.options import ENGINE_CHOICES, MAX_BATCH_SIZE, NUM_POSE_STYLES, PREPROCESS_MODES

from .config import Config
from .models import MAX_SEED


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def spec(config: Config) -> dict[str, Any]:
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
    job_ok = {"description": "the job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}
    mp4 = {"description": "the mp4 (Range requests answered with 206)", "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "DemoFront API", "version": "1.0.0",
                 "description": "Talking-head videos from a portrait and a voice clip (or text). Every error is "
                                "a JSON object with `error` (and `field` when one input is at fault)."},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "an API key made on /keys or with POST /api/keys"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "status"], "properties": {
                    "error": {"type": "string"}, "status": {"type": "integer"}, "field": {"type": "string"}}},
                "Options": {"type": "object", "properties": {
                    "preprocess": {"type": "string", "enum": list(PREPROCESS_MODES), "default": "crop"},
                    "still_mode": {"type": "boolean", "default": False},
                    "enhancer": {"type": "boolean", "default": False},
                    "batch_size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_SIZE, "default": 2},
                    "size": {"type": "integer", "enum": [256, 512], "default": 256},
                    "pose_style": {"type": "integer", "minimum": 0, "maximum": NUM_POSE_STYLES - 1, "default": 0},
                    "expression_scale": {"type": "number", "minimum": 0, "maximum": 3, "default": 1.0},
                    "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED, "default": 0},
                    "engine": {"type": "string", "enum": list(ENGINE_CHOICES), "default": "auto"}}},
                "Job": {"type": "object", "properties": {
                    "id": {"type": "string"},
                    "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
                    "progress": {"type": "number"}, "stage": {"type": ["string", "null"]},
                    "queue_position": {"type": ["integer", "null"], "description": "1: the next to start"},
                    "estimated_start_at": {"type": ["string", "null"],
                                           "description": "queued jobs: when a worker should take it"},
                    "attempt_count": {"type": "integer"}, "attempts": {"type": "array"},
                    "webhook": {"type": ["object", "null"], "description": "callback_url, status, attempts, error"},
                    "error": {"type": ["string", "null"]}, "error_kind": {"type": ["string", "null"]},
                    "created_at": {"type": "string"}, "started_at": {"type": ["string", "null"]},
                    "finished_at": {"type": ["string", "null"]}, "timings": {"type": "object"},
                    "expired_at": {"type": ["string", "null"],
                                   "description": "when the retention removed the job's files (JOB_RETENTION_DAYS)"},
                    "options": {"$ref": "#/components/schemas/Options"}, "engine": {"type": ["string", "null"]},
                    "image": {"type": "object"}, "audio": {"type": "object"},
                    "status_url": {"type": "string"}, "video_url": {"type": ["string", "null"]},
                    "stream_url": {"type": ["string", "null"],
                                   "description": "the video while it renders (fragmented MP4); null for a failed job"},
                    "page_url": {"type": "string"}}},
                "ApiKey": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "name": {"type": "string"}, "prefix": {"type": "string"},
                    "active": {"type": "boolean"}, "key": {"type": "string", "description": "only when created"},
                    "webhook_secret": {"type": "string", "description": "only when created: signs webhooks"}}},
            },
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/api/generate": {"post": {
                "summary": "Queue a generation (or wait for it with ?wait=true)",
                "parameters": [{"name": "wait", "in": "query", "schema": {"type": "boolean"},
                                "description": "block until done and answer with the mp4"}],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "allOf": [{"$ref": "#/components/schemas/Options"}, {"type": "object", "required": ["image"],
                              "properties": {
                                  "image": {"type": "string", "format": "binary"},
                                  "audio": {"type": "string", "format": "binary"},
                                  "text": {"type": "string", "maxLength": config.max_text_chars,
                                           "description": "spoken with espeak-ng instead of an audio file"},
                                  "language": {"type": "string", "default": "en"},
                                  "voice": {"type": "string", "description": "espeak-ng variant, e.g. f3"},
                                  "callback_url": {"type": "string", "format": "uri", "description": (
                                      "API keys only: the job's JSON is POSTed here when it ends, signed in "
                                      "X-DemoFront-Signature with the key's webhook secret (public http(s) "
                                      "addresses only)")}}}]}}}},
                "responses": {"202": {**job_ok, "description": "queued; poll status_url"}, "200": mp4,
                              "400": _error("an input or option is not acceptable (field named)"),
                              "401": _error("anonymous use is off: send an API key"),
                              "413": _error(f"the upload is larger than {config.max_upload_mb:g} MB, or a text field than 1 MB"),
                              "422": _error("?wait=true: the model refused the inputs (e.g. no face)"),
                              "429": _error("rate limit, or too many of your generations queued; see Retry-After"),
                              "502": _error("?wait=true: the model service failed or is unreachable"),
                              "503": _error("the queue is full; see Retry-After")}}},
            "/api/jobs": {"get": {"summary": "Your jobs, newest first", "parameters": [
                {"name": "page", "in": "query", "schema": {"type": "integer"}},
                {"name": "per_page", "in": "query", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "a page of jobs"}, "401": _error("not signed in")}}},
            "/api/jobs/{job_id}": {
                "get": {"summary": "Status, progress, error, timings, video URL", "parameters": [job_id],
                        "responses": {"200": job_ok, "404": _error("no such job (or not yours)")}},
                "delete": {"summary": "Delete the job and its stored files", "parameters": [job_id],
                           "responses": {"200": {"description": "deleted"}, "404": _error("no such job (or not yours)")}}},
            "/api/jobs/{job_id}/cancel": {"post": {
                "summary": "Cancel: a queued job never runs, a running one stops at its next progress report",
                "parameters": [job_id],
                "responses": {"200": {**job_ok, "description": "cancelled"},
                              "202": {**job_ok, "description": "running: being stopped"},
                              "404": _error("no such job (or not yours)"), "409": _error("the job already ended")}}},
            "/api/jobs/{job_id}/video": {"get": {"summary": "The mp4 (Range supported; ?download=1 for a file)",
                                                "parameters": [job_id],
                                                "responses": {"200": mp4, "206": mp4, "404": _error("no such job"),
                                                              "409": _error("not done yet"),
                                                              "410": _error("expired (JOB_RETENTION_DAYS)")}}},
            "/api/jobs/{job_id}/stream": {"get": {
                "summary": "The video while it renders: fragmented MP4 from the first fragment to the end",
                "description": "H.264 + AAC, a fragment per 0.48 s (one per frame for the first 4 frames), sent "
                               "by chunked transfer as the model service renders it (a queued job's request waits for its first fragment). Plays in a "
                               "<video> element from the URL (Chromium, tested); `curl -o out.mp4` gives a valid file. "
                               "A finished job's stream is the whole file at once (Range supported).",
                "parameters": [job_id],
                "responses": {"200": {"description": "fragmented mp4", "content": {"video/mp4": {"schema": {
                                  "type": "string", "format": "binary"}}}},
                              "404": _error("no such job"), "409": _error("the job failed before any video"),
                              "410": _error("expired (JOB_RETENTION_DAYS)")}}},
            "/api/preview": {"post": {
                "summary": "The face found in a portrait and the crop a preprocess mode and size will use",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["image"], "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "preprocess": {"type": "string", "enum": list(PREPROCESS_MODES), "default": "crop"},
                        "size": {"type": "integer", "enum": [256, 512], "default": 256}}}}}},
                "responses": {"200": {"description": "boxes in the portrait's pixels", "content": {
                                  "application/json": {"schema": {"type": "object", "properties": {
                                      "width": {"type": "integer"}, "height": {"type": "integer"},
                                      "face_box": {"type": "array", "items": {"type": "number"},
                                                   "description": "x0, y0, x1, y1"},
                                      "crop_box": {"type": "array", "items": {"type": "number"},
                                                   "description": "x0, y0, x1, y1"},
                                      "output": {"type": "array", "items": {"type": "integer"},
                                                 "description": "the video's width and height"}}}}}},
                              "400": _error("not an image"), "422": _error("no face found"),
                              "502": _error("the model service did not answer")}}},
            "/api/jobs/{job_id}/image": {"get": {"summary": "The stored input image", "parameters": [job_id],
                                                "responses": {"200": {"description": "the image"},
                                                              "410": _error("expired")}}},
            "/api/jobs/{job_id}/audio": {"get": {"summary": "The stored input audio", "parameters": [job_id],
                                                "responses": {"200": {"description": "the audio"},
                                                              "410": _error("expired")}}},
            "/api/keys": {
                "get": {"summary": "Your API keys", "responses": {"200": {"description": "keys"}}},
                "post": {"summary": "Make an API key (shown once)", "requestBody": {"content": {"application/json": {
                    "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}},
                    "responses": {"201": {"description": "the key", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ApiKey"}}}}}}},
            "/api/keys/{key_id}": {"delete": {"summary": "Revoke an API key", "parameters": [
                {"name": "key_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "revoked"}, "404": _error("no such key")}}},
            "/api/health": {"get": {"summary": "Liveness and job counts", "responses": {"200": {"description": "ok"}}}},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
        },
    }
