-- The fair queue's claim of free slots in kie's create window, as one call (see TaskRepository.claimQueuedSubmits).
-- It takes the window's advisory lock for the whole account; run from the gateway as six statements, the lock was
-- held across six round trips and every create of every instance queued behind it. Here it is held for the
-- server's own work only. Each statement below sees what was committed before it (READ COMMITTED takes a new
-- snapshot per statement of a volatile function), so the count under the lock includes every other claim.
CREATE FUNCTION "avatar_claim_create_slots"(
	p_max_creates integer,
	p_window_ms double precision,
	p_lease_ms double precision,
	p_fairness_memory_ms double precision,
	p_only uuid,
	p_now timestamptz
) RETURNS TABLE ("task_id" uuid, "slot_id" uuid, "submit_attempts" integer, "lease_until" timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	v_free integer;
	v_picked uuid[];
	v_lease_until timestamptz := p_now + make_interval(secs => p_lease_ms / 1000);
	v_task record;
BEGIN
	PERFORM pg_advisory_xact_lock(4201339, 0);
	-- The submit loop prunes; a create's own claim stays as short as it can.
	IF p_only IS NULL THEN
		DELETE FROM kie_create_slots
		WHERE taken_at <= clock_timestamp() - make_interval(secs => p_fairness_memory_ms / 1000);
	END IF;
	SELECT p_max_creates - count(*)::integer INTO v_free
	FROM kie_create_slots
	WHERE taken_at > clock_timestamp() - make_interval(secs => p_window_ms / 1000);
	IF v_free > 0 THEN
		-- A user's n-th queued task competes as turn (slots the user took in the window) + n; a tie goes to
		-- whoever was served longest ago. `p_only` is eligible although its first check is not yet due.
		SELECT array_agg(turn.id) INTO v_picked FROM (
			WITH served AS (
				SELECT s.user_id,
					count(*) FILTER (
						WHERE s.taken_at > clock_timestamp() - make_interval(secs => p_window_ms / 1000)
					) AS used,
					max(s.taken_at) AS last_served
				FROM kie_create_slots s GROUP BY s.user_id
			), queue AS (
				SELECT q.id, q.user_id, q.created_at,
					row_number() OVER (PARTITION BY q.user_id ORDER BY q.created_at, q.id) AS rank
				FROM avatar_tasks q
				WHERE q.state = 'PENDING' AND q.submit_status = 'queued'
					AND (q.next_check_at <= p_now OR q.id = p_only)
					AND (q.lease_until IS NULL OR q.lease_until <= p_now)
			)
			SELECT t.id FROM avatar_tasks t
			JOIN queue q ON q.id = t.id
			LEFT JOIN served s ON s.user_id = q.user_id
			ORDER BY coalesce(s.used, 0) + q.rank, s.last_served ASC NULLS FIRST, q.created_at, q.id
			LIMIT v_free
			FOR UPDATE OF t SKIP LOCKED
		) turn
		WHERE p_only IS NULL OR turn.id = p_only;
	END IF;
	IF v_picked IS NULL THEN
		-- Not its turn: from now on the queue may hand it to whichever instance finds a free slot.
		IF p_only IS NOT NULL THEN
			UPDATE avatar_tasks SET next_check_at = p_now WHERE id = p_only AND avatar_tasks.submit_status = 'queued';
		END IF;
		RETURN;
	END IF;
	-- Each taken task is in flight, so no other instance sends it, and its slot is recorded.
	FOR v_task IN
		UPDATE avatar_tasks
		SET submit_status = 'in_flight', submit_attempts = avatar_tasks.submit_attempts + 1,
			lease_until = v_lease_until, next_check_at = v_lease_until
		WHERE id = ANY (v_picked) AND state = 'PENDING' AND avatar_tasks.submit_status = 'queued'
		RETURNING avatar_tasks.id, avatar_tasks.user_id, avatar_tasks.submit_attempts
	LOOP
		task_id := v_task.id;
		submit_attempts := v_task.submit_attempts;
		lease_until := v_lease_until;
		INSERT INTO kie_create_slots (user_id, taken_at) VALUES (v_task.user_id, clock_timestamp())
		RETURNING kie_create_slots.id INTO slot_id;
		RETURN NEXT;
	END LOOP;
END
$$;
