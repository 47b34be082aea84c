-- Seed for the demo application's database (sagelab.tools.demo.DemoDatabase).
-- Customer accounts a voice agent can search, read out and update. Names and cities are short
-- and easy to pronounce so that speech recognition gets them right; some cities repeat so that
-- a search has more than one answer.
CREATE TABLE records (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    city        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('trial', 'active', 'paused', 'closed')),
    owner       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    notes       TEXT NOT NULL DEFAULT ''
);

INSERT INTO records (id, name, city, status, owner, updated_at, notes) VALUES
    (1,  'Anna Berg',    'Oslo',    'active', 'Maya',  '2025-05-03T09:15:00+00:00', 'Wants a demo of the voice assistant in June.'),
    (2,  'Leo Marin',    'Lyon',    'trial',  'Sam',   '2025-05-12T14:02:00+00:00', 'Trial ends on the thirtieth; asked about pricing.'),
    (3,  'Mia Sato',     'Osaka',   'active', 'Priya', '2025-04-28T08:40:00+00:00', 'Renewal due in September.'),
    (4,  'Omar Haddad',  'Dubai',   'paused', 'Jack',  '2025-03-19T11:30:00+00:00', 'Paused during an office move.'),
    (5,  'Lena Vogel',   'Berlin',  'active', 'Maya',  '2025-05-20T16:45:00+00:00', 'Reported slow audio on mobile.'),
    (6,  'Ravi Patel',   'Pune',    'trial',  'Priya', '2025-05-22T07:05:00+00:00', 'Needs invoices in rupees.'),
    (7,  'Sofia Rossi',  'Milan',   'active', 'Sam',   '2025-02-11T10:20:00+00:00', 'Happy customer; agreed to a case study.'),
    (8,  'Tom Baker',    'Leeds',   'closed', 'Jack',  '2024-12-02T15:00:00+00:00', 'Moved to a competitor.'),
    (9,  'Nina Kowal',   'Krakow',  'active', 'Priya', '2025-05-01T12:10:00+00:00', 'Asked for a second seat.'),
    (10, 'Ben Carter',   'Denver',  'trial',  'Maya',  '2025-05-25T18:30:00+00:00', 'Testing the booking tool.'),
    (11, 'Ella Moreau',  'Lyon',    'active', 'Sam',   '2025-04-15T09:00:00+00:00', 'Prefers calls in French.'),
    (12, 'Jonas Lind',   'Oslo',    'paused', 'Jack',  '2025-01-30T13:25:00+00:00', 'Budget review until spring.'),
    (13, 'Aisha Bello',  'Lagos',   'active', 'Priya', '2025-05-18T10:50:00+00:00', 'Wants faster support replies.'),
    (14, 'Mateo Cruz',   'Lima',    'trial',  'Sam',   '2025-05-27T08:15:00+00:00', 'Asked about Spanish voices.'),
    (15, 'Hana Kim',     'Seoul',   'active', 'Maya',  '2025-03-08T06:40:00+00:00', 'Uses the assistant every day.'),
    (16, 'Owen Price',   'Cardiff', 'closed', 'Jack',  '2024-11-20T17:10:00+00:00', 'Closed after the pilot.'),
    (17, 'Clara Diaz',   'Seville', 'active', 'Sam',   '2025-04-02T11:05:00+00:00', 'Invoice address changed in April.'),
    (18, 'Felix Wren',   'Dublin',  'paused', 'Priya', '2025-02-25T14:35:00+00:00', 'Waiting for the new contract.'),
    (19, 'Yara Nassar',  'Berlin',  'trial',  'Maya',  '2025-05-29T09:55:00+00:00', 'Wants a demo for her team.'),
    (20, 'Kai Tanaka',   'Kyoto',   'active', 'Jack',  '2025-05-10T07:20:00+00:00', 'Asked about pricing for ten seats.');
