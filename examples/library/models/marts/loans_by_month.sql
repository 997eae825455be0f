select c.month_start, count(f.loan_id) as loans
from {{ ref('library_utils', 'calendar_months') }} as c
left join {{ ref('fct_loans') }} as f on date_trunc('month', f.borrowed_on) = c.month_start
group by 1
