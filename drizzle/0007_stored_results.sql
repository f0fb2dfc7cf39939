CREATE TABLE "stored_results" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"task_id" uuid NOT NULL,
	"position" integer NOT NULL,
	"source_url" text NOT NULL,
	"status" text DEFAULT 'copying' NOT NULL,
	"storage_key" text,
	"content_type" text,
	"size_bytes" bigint,
	"sha256" text,
	"duration_seconds" double precision,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp (3) with time zone,
	"lease_until" timestamp (3) with time zone,
	"last_error" text,
	"stored_at" timestamp (3) with time zone,
	"expires_at" timestamp (3) with time zone
);
--> statement-breakpoint
ALTER TABLE "stored_results" ADD CONSTRAINT "stored_results_task_id_avatar_tasks_id_fk" FOREIGN KEY ("task_id") REFERENCES "public"."avatar_tasks"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "stored_results_task_position_idx" ON "stored_results" USING btree ("task_id","position");--> statement-breakpoint
CREATE INDEX "stored_results_due_idx" ON "stored_results" USING btree ("next_attempt_at") WHERE "stored_results"."status" = 'copying';--> statement-breakpoint
CREATE INDEX "stored_results_expires_idx" ON "stored_results" USING btree ("expires_at") WHERE "stored_results"."status" = 'stored';