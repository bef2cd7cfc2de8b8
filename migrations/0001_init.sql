-- 0001_init: jobs, model revisions and captions.
-- Applied by caption_store_migrate inside its own transaction: no BEGIN/COMMIT here.
-- Never edit this file once released; add a new numbered migration instead (the migrator
-- refuses to run when an applied migration's checksum changed).

-- One row per job (one Kafka message). The daemon upserts it when a job starts and again when
-- its outcome is written.
CREATE TABLE jobs (
    job_id          text PRIMARY KEY CHECK (job_id <> ''),
    clip_uri        text NOT NULL DEFAULT '',
    clip_id         text,
    -- What "the same clip" means for the views: the caller's clip id, else the URI.
    clip_key        text GENERATED ALWAYS AS (COALESCE(clip_id, clip_uri)) STORED,
    status          text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error_cause     text CHECK (error_cause <> ''),
    error_message   text,
    kafka_topic     text,
    kafka_partition integer CHECK (kafka_partition >= 0),
    kafka_offset    bigint CHECK (kafka_offset >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    fetch_seconds   double precision CHECK (fetch_seconds >= 0),
    decode_seconds  double precision CHECK (decode_seconds >= 0),
    engine_seconds  double precision CHECK (engine_seconds >= 0),
    -- A failed job says why; a running or completed one carries no error.
    CONSTRAINT jobs_error_iff_failed
        CHECK ((status = 'failed') = (error_cause IS NOT NULL AND error_message IS NOT NULL)),
    CONSTRAINT jobs_finished_iff_done CHECK ((status = 'running') = (finished_at IS NULL))
);

CREATE INDEX jobs_clip_key_idx ON jobs (clip_key);
CREATE INDEX jobs_failed_cause_idx ON jobs (error_cause, finished_at) WHERE status = 'failed';
CREATE INDEX jobs_completed_finished_idx ON jobs (finished_at) WHERE status = 'completed';
CREATE INDEX jobs_status_idx ON jobs (status);

-- What produced a caption: the model variant, the exact Hugging Face revision and weights,
-- the engine build and backend. Captions point here instead of repeating six strings.
CREATE TABLE model_revisions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    variant        text NOT NULL CHECK (variant <> ''),
    hf_model_id    text NOT NULL CHECK (hf_model_id <> ''),
    revision       text NOT NULL CHECK (revision <> ''),
    -- '' when the weights were not hashed; otherwise lowercase hex.
    weights_sha256 text NOT NULL DEFAULT ''
        CHECK (weights_sha256 = '' OR weights_sha256 ~ '^[0-9a-f]{64}$'),
    engine_version text NOT NULL CHECK (engine_version <> ''),
    backend        text NOT NULL CHECK (backend <> ''),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT model_revisions_natural_key
        UNIQUE (variant, hf_model_id, revision, weights_sha256, engine_version, backend)
);

-- One row per job x window x stage x model revision.
CREATE TABLE captions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id            text NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    window_index      integer NOT NULL CHECK (window_index >= 0),
    start_frame       bigint NOT NULL CHECK (start_frame >= 0),
    end_frame         bigint NOT NULL,
    stage             smallint NOT NULL CHECK (stage IN (1, 2)),
    prompt_text       text NOT NULL,
    caption           text NOT NULL,
    prompt_tokens     integer NOT NULL CHECK (prompt_tokens >= 0),
    output_tokens     integer NOT NULL CHECK (output_tokens >= 0),
    finish_reason     text NOT NULL CHECK (finish_reason IN ('stop', 'length')),
    sampling          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(sampling) = 'object'),
    model_revision_id bigint NOT NULL REFERENCES model_revisions (id),
    prefill_seconds   double precision NOT NULL CHECK (prefill_seconds >= 0),
    decode_seconds    double precision NOT NULL CHECK (decode_seconds >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT captions_frames_ordered CHECK (end_frame >= start_frame),
    -- The idempotency key: a redelivered job updates these rows and never adds more.
    CONSTRAINT captions_natural_key UNIQUE (job_id, window_index, stage, model_revision_id)
);

CREATE INDEX captions_model_revision_idx ON captions (model_revision_id, created_at);
