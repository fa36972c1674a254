-- The phase of a saga running its compensations is called `compensating` (it was `backward`).
UPDATE saga_instance SET phase = 'compensating' WHERE phase = 'backward';
