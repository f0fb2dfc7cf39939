ALTER TABLE "avatar_tasks" ADD COLUMN "estimated_credits" double precision;--> statement-breakpoint
-- The create function with the task's estimate (kie's price per second times the audio's duration) stored in the
-- same insert. An overload beside 0005's, not a replacement: instances still running the code before this one call
-- the old signature during a rolling deploy and keep working. The body is 0005's with that one column added.
CREATE FUNCTION "avatar_insert_task_within_quota"(
	p_id uuid,
	p_user_id text,
	p_model text,
	p_image_url text,
	p_audio_url text,
	p_prompt text,
	p_idempotency_key text,
	p_input_hash text,
	p_callback_secret text,
	p_next_check_at timestamptz,
	p_now timestamptz,
	p_max_pending integer,
	p_max_active integer,
	p_max_per_hour integer,
	p_estimated_credits double precision
) RETURNS TABLE (
	"outcome" text,
	"task_id" uuid,
	"queued" integer,
	"quota" text,
	"quota_limit" integer,
	"resets_at" timestamptz
)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	v_existing uuid;
	v_queued integer;
	v_active integer;
	v_last_hour integer;
	v_hour_ago timestamptz := p_now - interval '1 hour';
	v_freeing timestamptz;
	v_inserted uuid;
BEGIN
	PERFORM pg_advisory_xact_lock(4201338, hashtext(p_user_id));
	IF p_idempotency_key IS NOT NULL THEN
		SELECT t.id INTO v_existing FROM avatar_tasks t
		WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
		IF v_existing IS NOT NULL THEN
			RETURN QUERY SELECT 'existing'::text, v_existing, NULL::integer, NULL::text, NULL::integer, NULL::timestamptz;
			RETURN;
		END IF;
	END IF;

	SELECT count(*)::integer INTO v_queued FROM avatar_tasks t
	WHERE t.state = 'PENDING' AND t.submit_status = 'queued';
	IF v_queued >= p_max_pending THEN
		RETURN QUERY SELECT 'queue_full'::text, NULL::uuid, v_queued, NULL::text, NULL::integer, NULL::timestamptz;
		RETURN;
	END IF;

	SELECT (count(*) FILTER (WHERE t.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED')))::integer,
		(count(*) FILTER (WHERE t.created_at > v_hour_ago))::integer
	INTO v_active, v_last_hour
	FROM avatar_tasks t
	WHERE t.user_id = p_user_id AND (t.state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED') OR t.created_at > v_hour_ago);
	IF v_active >= p_max_active THEN
		RETURN QUERY SELECT 'quota'::text, NULL::uuid, NULL::integer, 'ACTIVE_TASKS'::text, p_max_active, NULL::timestamptz;
		RETURN;
	END IF;
	IF v_last_hour >= p_max_per_hour THEN
		-- The create whose hour ends next and brings the count under the cap.
		SELECT t.created_at INTO v_freeing FROM avatar_tasks t
		WHERE t.user_id = p_user_id AND t.created_at > v_hour_ago
		ORDER BY t.created_at ASC
		OFFSET v_last_hour - p_max_per_hour LIMIT 1;
		RETURN QUERY SELECT 'quota'::text, NULL::uuid, NULL::integer, 'CREATES_PER_HOUR'::text, p_max_per_hour,
			coalesce(v_freeing, p_now) + interval '1 hour';
		RETURN;
	END IF;

	INSERT INTO avatar_tasks (id, user_id, state, model, image_url, audio_url, prompt, estimated_credits,
		idempotency_key, input_hash, callback_secret, version, submit_status, next_check_at, created_at, updated_at)
	VALUES (p_id, p_user_id, 'PENDING', p_model, p_image_url, p_audio_url, p_prompt, p_estimated_credits,
		p_idempotency_key, p_input_hash, p_callback_secret, 1, 'queued', p_next_check_at, p_now, p_now)
	ON CONFLICT DO NOTHING
	RETURNING avatar_tasks.id INTO v_inserted;
	IF v_inserted IS NULL THEN
		-- Only the key can conflict, and its holder committed after the look above.
		SELECT t.id INTO v_existing FROM avatar_tasks t
		WHERE t.user_id = p_user_id AND t.idempotency_key = p_idempotency_key;
		IF v_existing IS NULL THEN
			RAISE EXCEPTION 'idempotent insert conflicted but no task holds the key';
		END IF;
		RETURN QUERY SELECT 'existing'::text, v_existing, NULL::integer, NULL::text, NULL::integer, NULL::timestamptz;
		RETURN;
	END IF;
	INSERT INTO avatar_task_events (task_id, version, state, source, at, message)
	VALUES (v_inserted, 1, 'PENDING', 'MUTATION', p_now, NULL);
	RETURN QUERY SELECT 'inserted'::text, v_inserted, NULL::integer, NULL::text, NULL::integer, NULL::timestamptz;
END
$$;
