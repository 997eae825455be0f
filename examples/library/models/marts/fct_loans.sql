select
    l.loan_id,
    l.book_id,
    l.member_id,
    m.membership,
    l.borrowed_on,
    l.returned_on,
    coalesce(l.returned_on, current_date) - l.borrowed_on as days_out,
    l.returned_on is null
        and current_date - l.borrowed_on > {{ var('loan_days') }} as is_overdue
from {{ ref('stg_loans') }} as l
join {{ ref('dim_members', v=2) }} as m using (member_id)
