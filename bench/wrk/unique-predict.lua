-- POST /predict with a churn row no other request repeats (nothing cacheable).
-- USE_CACHE=1 leaves the cache on (every lookup misses); by default the body says use_cache: false.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- API_KEY=... sends it as X-API-Key (for a server with AUTH_PREDICTIONS=keyed).
if os.getenv("API_KEY") then wrk.headers["X-API-Key"] = os.getenv("API_KEY") end
local cache = os.getenv("USE_CACHE") == "1" and "" or ',"use_cache":false'
local n = 0
local contracts = {1, 12, 24}
request = function()
  n = n + 1
  local tenure = 1 + (n % 72)
  local monthly = 20 + ((n * 7919) % 10000) / 100
  local body = string.format(
    '{"features":{"tenure_months":%d,"monthly_charges":%.2f,"total_charges":%.6f,"contract_length":%d,"num_products":%d,"support_tickets":%d,"satisfaction_score":%.2f}%s}',
    tenure, monthly, tenure * monthly + n / 1e6, contracts[(n % 3) + 1], 1 + (n % 5), n % 6, 1 + (n % 400) / 100, cache)
  return wrk.format(nil, "/predict", nil, body)
end
