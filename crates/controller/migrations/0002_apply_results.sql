-- The last apply result an agent reported: JSON {generation, at, results: [{item, ok, error}]}.
ALTER TABLE agents ADD COLUMN last_apply TEXT NOT NULL DEFAULT '';
