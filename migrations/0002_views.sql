-- 0002_views: views for the questions people ask (see docs/sql.md).
-- Applied by caption_store_migrate inside its own transaction: no BEGIN/COMMIT here.

-- For each clip and model variant, the captions of the latest run: the (job, model revision)
-- whose captions were written last. Every window and stage of that run, one row each.
CREATE VIEW latest_clip_captions AS
WITH latest_run AS (
    SELECT DISTINCT ON (j.clip_key, mr.variant)
           j.clip_key, mr.variant, c.job_id, c.model_revision_id
    FROM captions c
    JOIN jobs j ON j.job_id = c.job_id
    JOIN model_revisions mr ON mr.id = c.model_revision_id
    WHERE j.status = 'completed'
    ORDER BY j.clip_key, mr.variant, c.updated_at DESC, c.id DESC
)
SELECT r.clip_key,
       j.clip_id,
       j.clip_uri,
       r.variant AS model_variant,
       mr.hf_model_id,
       mr.revision,
       mr.backend,
       c.job_id,
       c.window_index,
       c.start_frame,
       c.end_frame,
       c.stage,
       c.caption,
       c.finish_reason,
       c.output_tokens,
       c.updated_at
FROM latest_run r
JOIN captions c ON c.job_id = r.job_id AND c.model_revision_id = r.model_revision_id
JOIN jobs j ON j.job_id = c.job_id
JOIN model_revisions mr ON mr.id = c.model_revision_id;

-- Failed jobs grouped by cause, with the most recent example of each.
CREATE VIEW failures_by_cause AS
SELECT error_cause AS cause,
       count(*) AS failed_jobs,
       max(finished_at) AS latest_failure_at,
       (array_agg(job_id ORDER BY finished_at DESC, job_id))[1] AS latest_job_id,
       (array_agg(clip_uri ORDER BY finished_at DESC, job_id))[1] AS latest_clip_uri,
       (array_agg(error_message ORDER BY finished_at DESC, job_id))[1] AS latest_message
FROM jobs
WHERE status = 'failed'
GROUP BY error_cause;

-- How many jobs are in each state, and how many attempts they took.
CREATE VIEW job_status_counts AS
SELECT status,
       count(*) AS jobs,
       sum(attempts) AS attempts,
       min(created_at) AS oldest_created_at,
       max(finished_at) AS latest_finished_at
FROM jobs
GROUP BY status;
