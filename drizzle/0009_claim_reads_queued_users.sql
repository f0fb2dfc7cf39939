CREATE INDEX "kie_create_slots_user_taken_at_idx" ON "kie_create_slots" USING btree ("user_id","taken_at");
--> statement-breakpoint
-- The claim (drizzle/0002_create_window_claim.sql) again, with the same statements in the same order under the
-- same lock, holding it for less: its WHERE clauses compared each slot's time with clock_timestamp(), which is
-- volatile, so every claim scanned every slot sequentially (twice), and the fair queue's `served` counted the
-- slots of every user who took one in the last ten minutes. With many creates in the window that work grew
-- with the window, under the lock every create of every instance waits on. The window's start is now read
-- once, after the lock is taken (so the count still includes every claim committed before it), and `served`
-- reads only the slots of users in the queue, from the index above.
CREATE OR REPLACE FUNCTION "avatar_claim_create_slots"(
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
	v_window_start timestamptz;
	v_task record;
BEGIN
	PERFORM pg_advisory_xact_lock(4201339, 0);
	-- Read once the lock is held: a bound that is a variable lets the index on taken_at serve each scan, where
	-- clock_timestamp() in a WHERE is evaluated per row of a sequential scan of every slot.
	v_window_start := clock_timestamp() - make_interval(secs => p_window_ms / 1000);
	-- The submit loop prunes; a create's own claim stays as short as it can.
	IF p_only IS NULL THEN
		DELETE FROM kie_create_slots
		WHERE taken_at <= clock_timestamp() - make_interval(secs => p_fairness_memory_ms / 1000);
	END IF;
	SELECT p_max_creates - count(*)::integer INTO v_free
	FROM kie_create_slots
	WHERE taken_at > v_window_start;
	IF v_free > 0 THEN
		-- A user's n-th queued task competes as turn (slots the user took in the window) + n; a tie goes to
		-- whoever was served longest ago. `p_only` is eligible although its first check is not yet due.
		SELECT array_agg(turn.id) INTO v_picked FROM (
			WITH queue AS (
				SELECT q.id, q.user_id, q.created_at,
					row_number() OVER (PARTITION BY q.user_id ORDER BY q.created_at, q.id) AS rank
				FROM avatar_tasks q
				WHERE q.state = 'PENDING' AND q.submit_status = 'queued'
					AND (q.next_check_at <= p_now OR q.id = p_only)
					AND (q.lease_until IS NULL OR q.lease_until <= p_now)
			), served AS (
				-- Only the users in the queue: each read from the (user_id, taken_at) index.
				SELECT s.user_id,
					count(*) FILTER (WHERE s.taken_at > v_window_start) AS used,
					max(s.taken_at) AS last_served
				FROM kie_create_slots s
				WHERE s.user_id IN (SELECT DISTINCT queue.user_id FROM queue)
				GROUP BY s.user_id
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
