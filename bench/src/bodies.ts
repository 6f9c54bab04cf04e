/** Request bodies: churn rows, unique per request unless drawn from a fixed set. */
const FEATURES = [
  'tenure_months',
  'monthly_charges',
  'total_charges',
  'contract_length',
  'num_products',
  'support_tickets',
  'satisfaction_score',
];

let counter = 0;
/** A churn row no other request in the run repeats (the counter makes every row distinct). */
export function uniqueChurnRow(): Record<string, number> {
  counter++;
  const tenure = 1 + (counter % 72);
  const monthly = 20 + ((counter * 7919) % 10000) / 100;
  return {
    tenure_months: tenure,
    monthly_charges: monthly,
    total_charges: tenure * monthly + counter / 1e6,
    contract_length: [1, 12, 24][counter % 3]!,
    num_products: 1 + (counter % 5),
    support_tickets: counter % 6,
    satisfaction_score: 1 + (counter % 400) / 100,
  };
}

export const uniquePredictBody = () => JSON.stringify({ features: uniqueChurnRow(), use_cache: false });
export { FEATURES };
